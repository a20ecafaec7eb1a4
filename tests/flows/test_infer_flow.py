"""Real InferFlow runs: local and on the loopback S3 server, a SIGKILLed shard that @retry
resumes exactly once, a rerun that skips, and bad --model values failing in start."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from steps.inference.predictions import load_labels, load_predictions
from steps.io.local_storage import LocalStorage
from steps.planning.inputs import list_inputs
from steps.report import usd
from tests.support.flows import SPOT_BATCH, S3Server, card_text, run_flow, run_flow_killing, upload_dir
from tests.support.inference import infer_args
from tests.support.models import CLASSES, save_bundle, save_torchscript

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

# Stands in for flows/train.py (tested on its own): `--model latest` only needs a successful
# TrainFlow run with a `model_uri` artifact in the same metadata and namespace.
STAND_IN_TRAINFLOW = textwrap.dedent(
    """
    from metaflow import FlowSpec, Parameter, step

    class TrainFlow(FlowSpec):
        uri = Parameter("uri")

        @step
        def start(self):
            self.model_uri = self.uri
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        TrainFlow()
    """
)


def train_stand_in(workdir: Path, model_uri: str) -> None:
    flow = workdir / "trainflow.py"
    flow.write_text(STAND_IN_TRAINFLOW)
    done = subprocess.run(
        [sys.executable, str(flow), "--no-pylint", "run", "--uri", model_uri],
        check=False,
        cwd=workdir,
        # The datastore run_flow gives InferFlow (not a .metaflow found above the working directory).
        env={**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(workdir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_latest_model_with_a_killed_shard_then_a_rerun_that_skips(sample_dir: Path, tmp_path: Path) -> None:
    bundle = str(save_bundle(tmp_path / "model.pt"))
    workdir, output = tmp_path / "work", tmp_path / "out"
    workdir.mkdir()
    train_stand_in(workdir, bundle)

    # The shard task is SIGKILLed from outside once its first part is committed (a spot loss).
    first, killed = run_flow_killing(
        "infer",
        workdir,
        *infer_args(sample_dir, output, "latest"),
        step="process_shard",
        ready=lambda: any((output / "predictions" / "all").glob("part-*.parquet")),
    )
    assert killed, "the shard finished before the kill:\n" + first.output[-3000:]
    assert first.ok, first.output[-3000:]
    run = first.client_run()
    assert run["process_shard"].task.current_attempt == 1
    summary = run.data.summary
    assert (summary["images"], summary["processed"], summary["rejected"]) == (54, 51, 3)
    # The retry resumes from the committed parts, or finds the shard the killed attempt completed:
    # either way it is this run's work (not "skipped as complete earlier") and billed.
    assert summary["reused_chunks"] >= 1 or summary["images_worked"] == 54
    assert summary["skipped_shards"] == 0 and summary["images_worked"] > 0
    assert summary["labelled"] == 51 and 0 <= summary["accuracy"] <= 1
    assert run.data.model["uri"] == bundle and run.data.model["type"] == "bundle"
    assert "Predicted 54 images" in first.output and "accuracy" in first.output

    predictions = load_predictions(str(output))
    assert list(predictions["key"]) == sorted(list_inputs(LocalStorage(sample_dir)))  # each key exactly once
    parts = sorted(p.name for p in (output / "predictions" / "all").iterdir())
    assert parts == [f"part-0000{i}.parquet" for i in range(9)]
    assert set(predictions.loc[predictions["status"] == "ok", "label"]) <= set(CLASSES)

    # The killed attempt is billed as work, not as a ratio of laptop times: every image this run's
    # attempts committed, plus at most the one chunk (6 images) the killed attempt had in flight.
    assert (summary["attempts"], summary["retried_attempts"]) == (2, 1)
    assert "(2 attempts incl. 1 retried); laptop seconds are not billed" in summary["cost_basis"]
    assert summary["images_worked"] == 54 and 0 <= summary["images_redone"] <= 6
    assert summary["cost_basis"].startswith("local run, priced as the same work on")
    assert "(54 images" in summary["cost_basis"]
    records = sorted((output / "_attempts" / run.id / "all").iterdir())
    assert [p.name for p in records] == ["0.json", "1.json"]
    killed_attempt = run["process_shard"].task["shard_stats"].data["attempt_seconds"][0]
    assert summary["task_seconds"] > killed_attempt > 0

    html = card_text("infer", workdir, f"{run.id}/join")
    assert "Predicted labels" in html and "Rejected inputs by reason" in html
    assert "Confusion matrix" in html and "Accuracy per true class" in html
    per_million = f"{usd(summary['usd_per_million_images'])} per million images"  # card JSON escapes ≈
    assert per_million in html and per_million in first.output
    # The first misclassified image (by key) is on the card with its truth, next to correct ones.
    truth = load_labels(LocalStorage(sample_dir)).set_index("key")["truth"]
    ok = predictions[predictions["status"] == "ok"].set_index("key")
    wrong = [k for k in ok.index if k in truth.index and ok.at[k, "label"] != truth[k]]
    if wrong:
        first_wrong = ok.loc[wrong[0]]
        assert "Misclassified (predicted label, score; truth)" in html
        assert f"{first_wrong['label']} {first_wrong['score']:.2f}; truth {truth[wrong[0]]}" in html

    parts = {p: p.stat().st_mtime_ns for p in (output / "predictions").rglob("*.parquet")}
    again = run_flow("infer", workdir, *infer_args(sample_dir, output, bundle))
    assert again.ok, again.output[-3000:]
    assert again.client_run().data.summary["skipped_shards"] == 1
    assert {p: p.stat().st_mtime_ns for p in (output / "predictions").rglob("*.parquet")} == parts


def test_torchscript_model_input_and_output_on_s3(s3_server: S3Server, sample_dir: Path, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("infer-s3")
    upload_dir(s3_server, sample_dir, f"{bucket}/images")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    save_torchscript(model_dir / "scripted.pt", {"input_size": 32})
    (model_dir / "scripted.pt.classes.txt").write_text("\n".join(CLASSES))
    upload_dir(s3_server, model_dir, f"{bucket}/models")

    result = run_flow(
        "infer",
        tmp_path / "work",
        *infer_args(f"{bucket}/images", f"{bucket}/out", f"{bucket}/models/scripted.pt"),
        "--decode",
        "gpu",  # the device pipeline, here on CPU tensors
        env=s3_server.env,
    )
    assert result.ok, result.output[-3000:]
    assert result.client_run().data.model["type"] == "torchscript"
    predictions = load_predictions(f"{bucket}/out")
    assert len(predictions) == 54 and predictions["key"].is_unique
    assert set(predictions.loc[predictions["status"] == "ok", "label"]) <= set(CLASSES)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{tmp}/missing.pt", "--model '{tmp}/missing.pt': expected an existing file or s3:// object"),
        # (wrong format, unknown architecture, bad weights: tests/test_inference.py, without a flow run)
        ("latest", "--model 'latest': expected a successful TrainFlow run"),
    ],
)
def test_bad_model_fails_in_start_with_one_line(sample_dir: Path, tmp_path: Path, model: str, message: str) -> None:
    def fill(text: str) -> str:
        return text.format(tmp=tmp_path, sample=sample_dir)

    result = run_flow(
        "infer",
        tmp_path / "work",
        *infer_args(sample_dir, tmp_path / "out", fill(model)),
    )
    assert not result.ok
    assert fill(message) in result.output
    assert "process_shard" not in result.output  # failed in start, before any fan-out


def test_readme_model_is_typed_exactly_once_after_a_sigkill_and_a_rerun_skips(sample_dir: Path, tmp_path: Path) -> None:
    from tests.unit.inference.test_user_models import readme_model

    spec = f"python:{readme_model(tmp_path)}:build"
    output = tmp_path / "out"
    first, killed = run_flow_killing(
        "infer",
        tmp_path / "work",
        *infer_args(sample_dir, output, spec),
        step="process_shard",
        ready=lambda: any((output / "predictions" / "all").glob("part-*.parquet")),
    )
    assert killed, "the shard finished before the kill:\n" + first.output[-3000:]
    assert first.ok, first.output[-3000:]
    run = first.client_run()
    assert run["process_shard"].task.current_attempt == 1  # the SIGKILL was retried like a spot loss
    assert run.data.model["type"] == "python" and run.data.model["architecture"] == "MeanColour"
    assert run.data.model["outputs"]["rgb_mean"] == "fixed_size_list<item: float>[3]"
    assert "Predicted 54 images" in first.output

    check = subprocess.run(
        [SPOT_BATCH, "verify", str(output), "--input", str(sample_dir)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr  # every input key exactly once
    predictions = load_predictions(str(output))
    assert list(predictions["key"]) == sorted(list_inputs(LocalStorage(sample_dir)))
    ok = predictions[predictions["status"] == "ok"]
    assert len(ok) == 51 and ok["brightness"].between(0, 1).all()
    shown = subprocess.run([SPOT_BATCH, "predictions", str(output)], capture_output=True, text=True, check=True)
    assert "columns: rgb_mean fixed_size_list<element: float>[3], brightness float" in shown.stdout

    parts = {p: p.stat().st_mtime_ns for p in (output / "predictions").rglob("*.parquet")}
    again = run_flow("infer", tmp_path / "work", *infer_args(sample_dir, output, spec))
    assert again.ok, again.output[-3000:]
    assert again.client_run().data.summary["skipped_shards"] == 1
    assert {p: p.stat().st_mtime_ns for p in (output / "predictions").rglob("*.parquet")} == parts
