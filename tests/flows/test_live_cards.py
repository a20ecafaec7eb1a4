"""Live cards on real runs: each shard task's card ends with a full progress bar and its counts;
the run's report says how long each shard took."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from steps.progress import reason_kind
from tests.support.flows import card_components, card_text, run_flow

SHARDING = ("--shard-size", "20", "--threads", "4", "--chunk-size", "8")


def test_each_shard_task_card_shows_a_full_progress_bar_and_its_final_counts(sample_dir: Path, tmp_path: Path) -> None:
    result = run_flow(
        "preprocess", tmp_path / "wd", "--input", str(sample_dir), "--output", str(tmp_path / "out"), *SHARDING
    )
    assert result.ok, result.output
    tasks = list(result.client_run()["process_shard"])
    assert len(tasks) > 1
    shown_rejects = 0
    for task in tasks:
        stats = task.data.shard_stats
        card = card_text("preprocess", result.workdir, task.pathspec.split("/", 1)[1])
        found = list(card_components(card))
        bars = [c for c in found if c["type"] == "progressBar"]
        assert len(bars) == 1 and bars[0]["value"] == bars[0]["max"] == stats["images"], bars
        assert f"{stats['images']}/{stats['images']} images" in bars[0]["details"]
        boxes = {c["title"]: c for c in found if c["type"] == "valueBox"}
        assert boxes["chunks committed"]["value"] == f"{stats['chunks']}/{stats['chunks']}"
        assert boxes["rejected so far"]["value"] == stats["rejected"]
        assert boxes["ETA"]["value"] == "done"
        text = "\n".join(c.get("source", "") for c in found if c["type"] == "markdown")
        assert f"# Shard {stats['name']}" in text and "finished" in text
        kinds = Counter(reason_kind(reason) for _, reason in stats["rejects"])
        assert all(f"| {kind} | {n} |" in text for kind, n in kinds.items()) if kinds else "no rejects" in text
        shown_rejects += sum(kinds.values())
    assert shown_rejects == result.client_run().data.summary["rejected"] > 0

    report = card_text("preprocess", result.workdir, f"{result.client_run().id}/join")
    assert "Shard durations and stragglers" in report and "median" in report and "ms/image" in report
