"""--notify, really run: the exit hook posts once when a run succeeds and once when it fails."""

from __future__ import annotations

from pathlib import Path

from tests.support.flows import run_flow
from tests.support.http_sink import http_sink


def test_success_and_failure_are_posted(sample_dir: Path, tmp_path: Path) -> None:
    with http_sink() as sink:
        ok = run_flow(
            "preprocess",
            tmp_path / "ok",
            "--input",
            str(sample_dir),
            "--output",
            str(tmp_path / "out"),
            "--notify",
            sink.url,
            "--threads",
            "2",
        )
        assert ok.ok, ok.output[-3000:]
        failed = run_flow(
            "preprocess",
            tmp_path / "bad",
            "--input",
            str(tmp_path / "missing"),
            "--output",
            str(tmp_path / "o2"),
            "--notify",
            sink.url,
        )
        assert not failed.ok
    succeeded, crashed = sink.received
    run = ok.client_run()
    assert (succeeded["flow"], succeeded["run"], succeeded["status"]) == ("PreprocessFlow", run.pathspec, "succeeded")
    assert succeeded["headline"] == run.data.headline and succeeded["headline"].startswith("Preprocessed ")
    assert succeeded["summary"]["images"] == run.data.summary["images"]
    assert (crashed["status"], crashed["failed_step"]) == ("failed", "start")
    assert crashed["run"] == failed.client_run().pathspec
    assert "missing" in crashed["error"] and "\n" not in crashed["error"]
