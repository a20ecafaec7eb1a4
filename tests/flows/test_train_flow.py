"""Real TrainFlow runs on sample data: it learns, and a SIGKILLed run resumes bit-identically, with
one process and with two data-parallel gloo ranks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steps.io.storage import open_storage
from steps.models.bundle import ModelBundle
from steps.training.checkpoints import CheckpointStore
from tests.support.flows import FlowRun, card_components, card_text, first_attempt_rank_pids, run_flow, run_flow_killing

# Two ranks, each half of every global batch of 8: 41 training images of 51 labelled, 4 steps per
# epoch, 16 in all. The module's straight run (its learning, report and card) is also the
# reference the killed two-rank run must match bit for bit.
SETTINGS = ("--processes", "2", "--epochs", "4", "--batch-size", "8", "--image-size", "24", "--seed", "3")
# One process, batches of 16: 2 steps per epoch, 12 in all (the slow one-process kill test).
ONE_PROCESS = ("--epochs", "6", "--batch-size", "16", "--image-size", "64", "--seed", "7")


def artifacts(run: FlowRun) -> dict:
    assert run.ok, run.output[-3000:]
    data = run.client_run()["train"].task.data
    return {name: getattr(data, name) for name in ("model_uri", "metrics", "confusion", "summary", "rejects")}


def bundle(uri: str) -> ModelBundle:
    return ModelBundle.from_bytes(Path(uri).read_bytes(), uri)


@pytest.fixture(scope="module")
def straight(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[FlowRun, dict]:
    """An uninterrupted run: the reference for accuracy and for the resumed run's weights."""
    workdir = tmp_path_factory.mktemp("train-straight")
    run = run_flow("train", workdir, "--input", str(sample_dir), "--output", str(workdir / "out"), *SETTINGS)
    return run, artifacts(run)


def test_train_flow_learns_and_reports(straight: tuple[FlowRun, dict]) -> None:
    run, found = straight
    metrics, summary = found["metrics"], found["summary"]
    assert len(metrics["train_loss"]) == len(metrics["val_accuracy"]) == 4
    assert metrics["train_loss"][-1] < metrics["train_loss"][0]
    # Six classes: chance is 0.17. Clearly better than chance after a few seconds on a CPU.
    assert metrics["val_accuracy"][-1] >= 0.5, metrics
    assert metrics["val_accuracy"][-1] > summary["chance_accuracy"]
    assert summary["val_accuracy"] == round(metrics["val_accuracy"][-1], 4)
    assert summary["attempt"] == 0 and summary["resumed_from"] == "" and summary["world_size"] == 2
    assert "2 data-parallel ranks on cpu, 8 images per global batch" in run.output

    model = bundle(found["model_uri"])
    assert found["model_uri"].endswith(f"/models/{run.client_run().id}/model.pt")
    assert model.architecture == "small_cnn" and model.input_size == 24 and len(model.class_names) == 6
    assert model.build()(torch.zeros(1, 3, 24, 24)).shape == (1, 6)
    assert found["confusion"]["class_names"] == model.class_names
    assert sum(map(sum, found["confusion"]["matrix"])) > 0

    # Checkpoints: one per epoch end, the last 3 kept, under <output>/checkpoints/<run id>/.
    store = CheckpointStore(open_storage(str(run.workdir / "out" / "checkpoints")), run.client_run().id)
    assert store.committed_steps() == [8, 12, 16]
    assert "Trained small_cnn on 51 images" in run.output and "val accuracy" in run.output
    # A log line per checkpoint written: one per epoch end (steps 4, 8, 12, 16).
    written = [line for line in run.output.splitlines() if "checkpoint written (epoch end): " in line]
    assert len(written) == 4 and "/checkpoints/" in written[-1] and "ckpt-0000000016.pt, step 16" in written[-1]

    card = card_text("train", run.workdir, run.client_run()["end"].task.pathspec.split("/", 1)[1])
    assert "Confusion" in card and "astronaut" in card
    (chart,) = [c for c in card_components(card) if c["type"] == "vegaChart"]  # the curves, drawn by the UI
    points = {(p["metric"], p["epoch"]): p["value"] for p in chart["spec"]["data"]["values"]}
    assert [points[("val accuracy", e)] for e in range(1, 5)] == metrics["val_accuracy"]


def test_the_train_task_card_holds_per_epoch_curves_and_the_checkpoints(straight: tuple[FlowRun, dict]) -> None:
    run, found = straight
    task = run.client_run()["train"].task
    shown = list(card_components(card_text("train", run.workdir, task.pathspec.split("/", 1)[1])))
    (chart,) = [c for c in shown if c["type"] == "vegaChart"]
    points = {(p["metric"], p["epoch"]): p["value"] for p in chart["spec"]["data"]["values"]}
    for metric in ("train_loss", "val_accuracy"):
        assert [points[(metric.replace("_", " "), e)] for e in range(1, 5)] == found["metrics"][metric]
    bars = {c["label"]: c for c in shown if c["type"] == "progressBar"}
    assert bars["epochs"]["value"] == bars["epochs"]["max"] == 4
    text = "\n".join(c.get("source", "") for c in shown if c["type"] == "markdown")
    assert "**finished** 4 epochs" in text and "| 4 | " in text  # the per-epoch table's last row
    assert "4 written by this attempt" in text and "ckpt-0000000016.pt" in text and "epoch end" in text


@pytest.mark.slow  # one process; the default run's representative is the two-rank test below (S3 too)
def test_sigkilled_training_resumes_bit_identically_from_s3(sample_dir: Path, tmp_path: Path, s3_server) -> None:
    reference = artifacts(
        run_flow(
            "train", tmp_path / "straight", "--input", str(sample_dir), "--output", str(tmp_path / "ref"), *ONE_PROCESS
        )
    )
    bucket = s3_server.make_bucket("train-ckpt")
    client = s3_server.client()

    def checkpoints_committed() -> int:
        listed = client.list_objects_v2(Bucket="train-ckpt", Prefix="checkpoints/").get("Contents", [])
        return sum(o["Key"].endswith(".json") for o in listed)

    # Attempt 0 is SIGKILLed from outside once 4 checkpoints are committed (mid epoch 2, as a
    # lost spot instance ends it); @retry's attempt 1 must resume from S3 with the same weights.
    run, killed = run_flow_killing(
        "train",
        tmp_path,
        "--input",
        str(sample_dir),
        "--output",
        str(tmp_path / "out"),
        *ONE_PROCESS,
        "--checkpoint-root",
        f"{bucket}/checkpoints",
        "--checkpoint-every",
        "0",
        step="train",
        ready=lambda: checkpoints_committed() >= 4,
        env=s3_server.env,
        poll_s=0.2,
    )
    assert killed, "training finished before the kill"
    found = artifacts(run)
    assert found["summary"]["attempt"] == 1, run.output[-3000:]
    assert "resuming from s3://train-ckpt/checkpoints/" in run.output
    assert found["summary"]["resumed_from"].endswith(".pt")

    expected, resumed = bundle(reference["model_uri"]).state_dict, bundle(found["model_uri"]).state_dict
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)
    assert found["metrics"] == reference["metrics"]
    store = CheckpointStore(open_storage(f"{bucket}/checkpoints"), run.client_run().id)
    assert store.committed_steps() == [10, 11, 12]


def test_missing_labels_fail_in_start_with_one_line(sample_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "unlabelled"
    images.mkdir()
    for path in list(sample_dir.glob("*.jpg"))[:4]:
        (images / path.name).write_bytes(path.read_bytes())
    run = run_flow("train", tmp_path, "--input", str(images), "--output", str(tmp_path / "out"))
    assert not run.ok
    assert f"labels file '{images}/labels.csv': expected a labels.csv with header key,label" in run.output
    assert "Task is starting" in run.output and "train/" not in run.output  # failed in start


def test_two_gloo_ranks_survive_a_sigkilled_rank_bit_identically_from_s3(
    straight: tuple[FlowRun, dict], sample_dir: Path, tmp_path: Path, s3_server
) -> None:
    straight_run, reference = straight
    bucket = s3_server.make_bucket("train-ranks-ckpt")
    client = s3_server.client()

    def checkpoints_committed() -> int:
        listed = client.list_objects_v2(Bucket="train-ranks-ckpt", Prefix="checkpoints/").get("Contents", [])
        return sum(o["Key"].endswith(".json") for o in listed)

    # One rank (not the task) is SIGKILLed once 3 checkpoints are committed to S3: the task must
    # notice, fail, and @retry's attempt 1 must resume from rank 0's checkpoint to the same weights.
    run, killed = run_flow_killing(
        "train",
        tmp_path / "killed",
        "--input",
        str(sample_dir),
        "--output",
        str(tmp_path / "killed-out"),
        *SETTINGS,
        "--checkpoint-root",
        f"{bucket}/checkpoints",
        "--checkpoint-every",
        "0",
        step="train",
        ready=lambda: checkpoints_committed() >= 3,
        victims=first_attempt_rank_pids,
        env=s3_server.env,
        poll_s=0.2,
    )
    assert killed, "training finished before the kill"
    found = artifacts(run)
    assert found["summary"]["attempt"] == 1 and found["summary"]["world_size"] == 2, run.output[-3000:]
    assert "of 2 was killed (SIGKILL); the retry resumes" in run.output
    assert "resuming from s3://train-ranks-ckpt/checkpoints/" in run.output and "(retry)" in run.output
    assert found["summary"]["resumed_from"].endswith(".pt")
    assert found["metrics"] == reference["metrics"]
    resumed, expected = bundle(found["model_uri"]).state_dict, bundle(reference["model_uri"]).state_dict
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)
    # The last 3 kept, the last one the straight run's final step.
    checkpoints = straight_run.workdir / "out" / "checkpoints"
    final = CheckpointStore(open_storage(str(checkpoints)), straight_run.client_run().id).committed_steps()[-1]
    store = CheckpointStore(open_storage(f"{bucket}/checkpoints"), run.client_run().id)
    assert store.committed_steps() == [final - 2, final - 1, final]
