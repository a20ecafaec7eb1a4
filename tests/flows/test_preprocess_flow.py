"""PreprocessFlow, really run: local datastore (its cards, live and final, and its --notify hook), S3
input/output, and Metaflow's S3 datastore."""

import csv
import io
import os
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from steps.progress import reason_kind
from steps.report import usd
from steps.stats.rejects import count_reasons
from tests.support.flows import SPOT_BATCH, FlowRun, S3Server, card_components, card_text, run_flow, upload_dir
from tests.support.http_sink import http_sink

SHARDING = ("--shard-size", "20", "--threads", "4", "--chunk-size", "8")


def good_and_bad(sample_dir: Path) -> tuple[set[str], set[str]]:
    with (sample_dir / "labels.csv").open() as f:
        good = {row["key"] for row in csv.DictReader(f)}
    everything = {p.name for p in sample_dir.iterdir()} - {"labels.csv"}
    return good, everything - good


def assert_region_chosen_in_start_and_the_run_told_it_is_local(first: FlowRun, workdir: Path) -> None:
    """The region selector runs in start (no task of its own); a local run is told it is local."""
    run = first.client_run()
    assert sorted(step.id for step in run) == ["end", "join", "process_shard", "start"]
    region_card = card_text("preprocess", workdir, f"{run.id}/start")
    assert "A task asks for no GPU, 4 vCPU" in region_card and "g4dn" not in region_card
    verdict = run.data.run_region
    assert verdict["run_region"] == "local" and verdict["saving_usd"] is None
    assert verdict["chosen"] == f"{run['start'].task.data.region_table[0]['region']} {run.data.instance_type}"
    assert run.data.summary["run_region"] == verdict["sentence"]
    assert verdict["sentence"].startswith("Local run: on AWS Batch") and verdict["sentence"] in first.output
    assert "Local run: on AWS Batch" in region_card


def assert_results_only(run) -> None:
    """Artifacts are plain data, so the Metaflow UI (which cannot import steps/) can show them, and
    results only: no flow class constants (Metaflow stores every public class attribute of the flow
    as an artifact of every task), nothing that nobody reads."""
    assert {type(task.data.shard_stats) for task in run["process_shard"]} == {dict}
    for step in run:
        for task in step:
            names = {artifact.id for artifact in task}
            assert "input_uri" in names, (task.pathspec, sorted(names))  # parameters are in every task
            assert not {name for name in names if name.isupper()}, (task.pathspec, sorted(names))
            assert not names & {"shards", "region", "batch_queue"}, (task.pathspec, sorted(names))
    project_types = {a.id: type(a.data) for a in run["start"].task if type(a.data).__module__.startswith("steps")}
    assert not project_types, project_types


@dataclass(frozen=True)
class LocalRun:
    """One local run, shared by the tests that read it: its output and what its --notify hook posted."""

    run: FlowRun
    output: Path
    posted: list[dict]


@pytest.fixture(scope="module")
def local_run(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalRun:
    base = tmp_path_factory.mktemp("preprocess-local")
    with http_sink() as sink:
        args = ("--input", str(sample_dir), "--output", str(base / "out"), *SHARDING, "--notify", sink.url)
        first = run_flow("preprocess", base / "wd", *args)
    assert first.ok, first.output
    return LocalRun(first, base / "out", sink.received)


def test_local_run_writes_outputs_manifests_report_and_rerun_skips(sample_dir: Path, local_run: LocalRun) -> None:
    first, out = local_run.run, local_run.output
    assert "(retry)" not in first.output, "a healthy run must not need retries"
    good, bad = good_and_bad(sample_dir)

    assert {p.name for p in (out / "resized").iterdir()} == {k.rsplit(".", 1)[0] + ".jpg" for k in good}
    assert {p.name for p in (out / "edges").iterdir()} == {k.rsplit(".", 1)[0] + ".png" for k in good}
    for path in list((out / "resized").iterdir())[:5]:
        assert max(Image.open(path).size) <= 256

    manifests = sorted((out / "_manifests").iterdir())
    run = first.client_run()
    assert len(manifests) == run.data.shard_plan["shards"] > 1
    rows = [r for m in manifests for r in pq.read_table(m).to_pylist()]
    assert sorted(r["key"] for r in rows) == sorted(good | bad)  # every key exactly once
    rejected = {r["key"]: r["reason"] for r in rows if r["status"] == "rejected"}
    assert set(rejected) == bad and all(rejected.values())

    assert_results_only(run)

    summary = run.data.summary
    assert summary["images"] == len(good) + len(bad)
    assert (summary["processed"], summary["rejected"], summary["skipped_shards"]) == (len(good), len(bad), 0)
    assert summary["images_per_second"] > 0
    assert {r["key"] for r in run.data.rejects} == bad
    assert "Preprocessed" in first.output and "images/s" in first.output

    card = card_text("preprocess", first.workdir, f"{run.id}/join")
    # A Vega-Lite chart (drawn by the UI, not by the join task): a bar per shard, at its images/s.
    (chart,) = [c for c in card_components(card) if c["type"] == "vegaChart"]
    bars = {row["label"]: row["value"] for row in chart["spec"]["data"]["values"]}
    assert "Throughput per shard" in card
    worked = [task.data.shard_stats for task in run["process_shard"]]
    assert bars == pytest.approx({s["name"]: s["images"] / s["seconds"] for s in worked})
    # Rejects counted by reason, the same counts as the manifests give.
    assert f"Rejected inputs by reason ({len(bad)} in all)" in card
    for reason, count in count_reasons(rejected.values()):
        assert f'["{reason}","{count}"]' in card.replace(", ", ",")

    # The UI names each shard task by its shard; the log lines say which shard and attempt.
    names = run["start"].task.data.shard_names
    assert names == sorted(names) and {type(n) for n in names} == {str}
    assert {t["_foreach_stack"].data[-1].value for t in run["process_shard"]} == set(names)
    assert f"shard {names[0]}: attempt 0 of task " in first.output

    # A CPU step is priced on a CPU instance, locally from the calibrated rate; one $ per million
    # images in the summary, the headline printed at the end, and the report card.
    assert_region_chosen_in_start_and_the_run_told_it_is_local(first, first.workdir)
    assert summary["cost_basis"].startswith("local run, priced as the same work on no GPU, 4 vCPU, 8000 MB a task")
    assert summary["instance_types"] == run.data.instance_type and "xlarge" in summary["instance_types"]
    per_million = f"{usd(summary['usd_per_million_images'])} per million images"  # card JSON escapes ≈
    assert summary["usd_per_million_images"] > 0 and summary["attempts"] == len(names)
    assert per_million in first.output
    assert per_million in card and usd(summary["usd_per_million_images"]) in card.split("$ per million images")[1][:40]

    second = run_flow("preprocess", first.workdir, "--input", str(sample_dir), "--output", str(out), *SHARDING)
    assert second.ok, second.output
    rerun = second.client_run().data.summary
    assert rerun["skipped_shards"] == rerun["shards"] == summary["shards"]
    assert (rerun["processed"], rerun["rejected"]) == (summary["processed"], summary["rejected"])
    assert "complete in an earlier run" in second.output


def test_each_shard_task_card_shows_a_full_progress_bar_and_its_final_counts(local_run: LocalRun) -> None:
    result = local_run.run
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


def test_success_and_failure_are_posted(local_run: LocalRun, tmp_path: Path) -> None:
    """--notify: the exit hook posts once when a run succeeds (the shared local run) and once when it fails."""
    with http_sink() as sink:
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
    (succeeded,), (crashed,) = local_run.posted, sink.received
    run = local_run.run.client_run()
    assert (succeeded["flow"], succeeded["run"], succeeded["status"]) == ("PreprocessFlow", run.pathspec, "succeeded")
    assert succeeded["headline"] == run.data.headline and succeeded["headline"].startswith("Preprocessed ")
    assert succeeded["summary"]["images"] == run.data.summary["images"]
    assert (crashed["status"], crashed["failed_step"]) == ("failed", "start")
    assert crashed["run"] == failed.client_run().pathspec
    assert "missing" in crashed["error"] and "\n" not in crashed["error"]


def test_s3_input_and_output_with_s3_datastore(sample_dir: Path, tmp_path: Path, s3_server: S3Server) -> None:
    """A key list on S3 (--manifest) names the inputs: the run and `spot-batch verify --manifest`
    take its keys, not the listing, so the images it leaves out are not inputs."""
    bucket = s3_server.make_bucket("preprocess-s3")
    upload_dir(s3_server, sample_dir, f"{bucket}/in")
    good, bad = good_and_bad(sample_dir)
    left_out = sorted(good)[:5]
    named = sorted((good | bad) - set(left_out))
    s3_server.client().put_object(Bucket="preprocess-s3", Key="lists/keys.txt", Body="\n".join(named).encode())
    env = {
        **s3_server.env,
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": f"{bucket}/metaflow",
    }
    result = run_flow(
        "preprocess",
        tmp_path / "wd",
        "--input",
        f"{bucket}/in",
        "--output",
        f"{bucket}/out",
        "--shard-size",
        "1000",
        "--manifest",
        f"{bucket}/lists/keys.txt",
        "--device",
        "cuda",  # the tensor path; on this CPU-only machine on CPU tensors, and the log says so
        env=env,
    )
    assert result.ok, result.output
    assert "the tensor path runs on CPU tensors" in result.output
    client = s3_server.client()
    listed = [o["Key"] for o in client.list_objects_v2(Bucket="preprocess-s3", Prefix="out/resized/")["Contents"]]
    assert len(listed) == len(good) - len(left_out)
    manifest = client.get_object(Bucket="preprocess-s3", Key="out/_manifests/all.parquet")["Body"].read()
    assert pq.read_table(io.BytesIO(manifest)).column("key").to_pylist() == named

    def verify(*extra: str) -> subprocess.CompletedProcess:
        command = [SPOT_BATCH, "verify", f"{bucket}/out", "--input", f"{bucket}/in", *extra]
        return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **s3_server.env}, check=False)

    with_manifest, listing = verify("--manifest", f"{bucket}/lists/keys.txt"), verify()
    assert with_manifest.returncode == 0, with_manifest.stdout + with_manifest.stderr
    assert f"OK: {len(named)}/{len(named)} input keys" in with_manifest.stdout
    assert listing.returncode == 1 and f"{left_out[0]}: missing from every manifest" in listing.stdout
    datastore = client.list_objects_v2(Bucket="preprocess-s3", Prefix="metaflow/PreprocessFlow/")
    assert datastore["KeyCount"] > 0  # Metaflow's own artifacts went to the loopback S3 too
