"""Multi-region dispatch, end to end: "regions" are buckets on the loopback S3 server, created
with location constraints, so the bucket-location lookup is real too. Rows without a region go
where the region selector puts them. Manifests dispatch TrainFlow and InferFlow; a failing row is
recorded, then redone alone."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from steps.config_files import config_file
from steps.cost.prices import parse_snapshot, read_snapshot
from steps.cost.resources import flow_resources
from steps.cost.throughput import read_throughput
from steps.demo.sample_data import generate
from steps.dispatch.placing import Selector, flow_defaults, place_row
from steps.io.storage import open_storage
from tests.support.flows import S3Server, card_text, run_flow, upload_dir
from tests.support.models import save_bundle

IMAGES_PER_BUCKET = 10
EXTRA_FILES = 6  # generate() adds a CMYK JPEG, a PNG, a greyscale JPEG and three bad files
BAD_FILES = 3


def selector_says(flow: str, uri: str) -> dict:
    """Where ``choose_region`` puts a row of ``flow`` without a region, asked here as DispatchFlow's
    start asks it (the flow's live price lookup falls back to the same snapshot offline)."""
    resources = flow_resources(flow)
    book = parse_snapshot(read_snapshot())
    fits = tuple(q for q in book.quotes if resources.tasks_per_instance(q.shape) > 0)
    regions = tomllib.loads(Path(config_file("regions.toml")).read_text())
    selector = Selector(flow, flow_defaults(flow), resources, read_throughput(), regions, replace(book, quotes=fits))
    return place_row(uri, "", {}, selector).to_plain()


@pytest.fixture(scope="module")
def regional_buckets(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """region → input location, each holding its own small sample set. sa-east-1 has no queue in
    config/regions.toml: a run cannot go next to that data."""
    client = s3_server.client()
    client.create_bucket(Bucket="images-us")
    client.create_bucket(Bucket="images-sa", CreateBucketConfiguration={"LocationConstraint": "sa-east-1"})
    inputs = {}
    for region, bucket, seed in (("us-east-1", "images-us", 3), ("sa-east-1", "images-sa", 4)):
        directory = tmp_path_factory.mktemp(bucket)
        generate(directory, count=IMAGES_PER_BUCKET, seed=seed)
        (directory / "labels.csv").unlink()
        inputs[region] = f"s3://{bucket}/raw"
        upload_dir(s3_server, directory, inputs[region])
    return inputs


def test_dispatch_runs_one_preprocess_per_region_and_merges(
    s3_server: S3Server, regional_buckets: dict[str, str], tmp_path: Path
) -> None:
    run = run_flow(
        "dispatch",
        tmp_path,
        "--inputs",
        ",".join(regional_buckets.values()),
        "--output",
        "s3://{bucket}/preprocessed",
        env=s3_server.env,
    )
    assert run.ok, run.output[-3000:]

    data = run.client_run().data
    per_bucket = IMAGES_PER_BUCKET + EXTRA_FILES
    assert data.summary["images"] == 2 * per_bucket
    assert data.summary["rejected"] == 2 * BAD_FILES
    # No region column: each row runs where the selector says for its flow and size, not simply
    # where its data is; the sa-east-1 data has no queue there, so its row runs elsewhere.
    chosen = [selector_says("preprocess", uri) for uri in regional_buckets.values()]
    assert [r["place"] for r in data.rows] == chosen
    assert [(p["decided_by"], p["data_region"]) for p in chosen] == [("selector", r) for r in regional_buckets]
    assert chosen[1]["region"] != "sa-east-1" and chosen[1]["runner_up"] and chosen[1]["reason"]
    assert [(r["region"], r["input"], r["output"], r["status"]) for r in data.rows] == [
        (chosen[0]["region"], "s3://images-us/raw", "s3://images-us/preprocessed", "succeeded"),
        (chosen[1]["region"], "s3://images-sa/raw", "s3://images-sa/preprocessed", "succeeded"),
    ]
    # The report shows, per row, the chosen region, the runner-up and the reason.
    report = card_text("dispatch", tmp_path, f"{run.client_run().id}/join")
    for place in chosen:
        assert place["runner_up"] in report and place["reason"] in report
    for region_run in data.rows:
        assert region_run["summary"]["images"] == per_bucket
        assert region_run["run"].startswith("PreprocessFlow/")
        # Each region's results stay in that region's bucket.
        written = open_storage(region_run["output"]).list()
        assert any(o.key.endswith(".jpg") for o in written)
    assert "Dispatched 2 PreprocessFlow rows: 2 ran, 0 done earlier, 0 failed; 32 images" in run.output


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("s3://images-us/same", "expected a distinct output per input"),
        ("/out/{foo}", "--output '/out/{foo}': expected a location whose only {fields} are {bucket}, {region}"),
    ],
    ids=["collides", "unknown-field"],
)
def test_dispatch_rejects_a_bad_output_in_one_line(
    output: str, message: str, s3_server: S3Server, regional_buckets: dict[str, str], tmp_path: Path
) -> None:
    run = run_flow(
        "dispatch", tmp_path, "--inputs", ",".join(regional_buckets.values()), "--output", output, env=s3_server.env
    )
    assert not run.ok
    assert sum(message in line for line in run.output.splitlines()) == 1, run.output[-3000:]
    assert "Traceback" not in run.output and "Internal error" not in run.output, run.output[-3000:]


TRAIN_SETTINGS = "epochs=1,batch_size=8,image_size=32,seed=3"


@pytest.fixture(scope="module")
def labelled_buckets(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two labelled sample sets, uploaded to train-us (us-east-1) and train-eu (eu-west-1), the
    eu one at first without its labels.csv, so training there fails until it is uploaded."""
    client = s3_server.client()
    client.create_bucket(Bucket="train-us")
    client.create_bucket(Bucket="train-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    sets = {}
    for bucket, seed in (("train-us", 5), ("train-eu", 6)):
        sets[bucket] = tmp_path_factory.mktemp(bucket)
        generate(sets[bucket], count=IMAGES_PER_BUCKET + 2, seed=seed)
        upload_dir(s3_server, sets[bucket], f"s3://{bucket}/raw")
    client.delete_object(Bucket="train-eu", Key="raw/labels.csv")
    return sets


def test_dispatch_trains_per_row_a_failing_row_is_reported_and_a_rerun_redoes_only_it(
    s3_server: S3Server, labelled_buckets: dict[str, Path], tmp_path: Path
) -> None:
    manifest = tmp_path / "train.csv"
    manifest.write_text(
        "# region,input,output,parameters\n"
        f"us-east-1,s3://train-us/raw,s3://train-us/trained,{TRAIN_SETTINGS}\n"
        f"eu-west-1,s3://train-eu/raw,s3://train-eu/trained,{TRAIN_SETTINGS}\n"
    )
    args = ("--flow", "train", "--manifest", str(manifest))
    first = run_flow("dispatch", tmp_path, *args, env=s3_server.env)
    assert not first.ok, "a dispatch with a failed row ends failed"
    rows = first.client_run()["join"].task.data.rows
    assert [(r["line"], r["region"], r["status"]) for r in rows] == [
        (2, "us-east-1", "succeeded"),
        (3, "eu-west-1", "failed"),
    ]
    trained, failed = rows
    assert trained["parameters"] == {"epochs": 1, "batch_size": 8, "image_size": 32, "seed": 3}
    assert trained["run"].startswith("TrainFlow/") and trained["summary"]["epochs"] == 1
    assert trained["summary"]["model_uri"].startswith("s3://train-us/trained/models/")
    # The child run's own reason, from its failing task, not Metaflow's "Step start failed".
    assert failed["run"].startswith("TrainFlow/") and failed["error"].startswith("step start: ")
    assert "labels.csv" in failed["error"] and "\n" not in failed["error"]
    assert "1 of 2 rows failed (line 3 (eu-west-1 s3://train-eu/raw))" in first.output

    s3_server.client().upload_file(str(labelled_buckets["train-eu"] / "labels.csv"), "train-eu", "raw/labels.csv")
    rerun = run_flow("dispatch", tmp_path, *args, env=s3_server.env)
    assert rerun.ok, rerun.output[-3000:]
    again = rerun.client_run().data.rows
    assert [(r["status"], r["run"] == trained["run"]) for r in again] == [("done earlier", True), ("succeeded", False)]
    labelled = {b: len((d / "labels.csv").read_text().splitlines()) - 1 for b, d in labelled_buckets.items()}
    assert again[1]["summary"]["images"] == labelled["train-eu"]
    assert "2 TrainFlow rows: 1 ran, 1 done earlier, 0 failed" in rerun.output


@pytest.mark.slow  # the default run dispatches PreprocessFlow and TrainFlow; InferFlow rows are the same rows
def test_dispatch_infers_per_bucket_where_each_buckets_location_decides(
    s3_server: S3Server, labelled_buckets: dict[str, Path], tmp_path: Path
) -> None:
    # Both buckets labelled, as the training test's rerun leaves them. No region column: each
    # bucket's location decides.
    s3_server.client().upload_file(str(labelled_buckets["train-eu"] / "labels.csv"), "train-eu", "raw/labels.csv")
    model = save_bundle(tmp_path / "model.pt")
    infer_manifest = tmp_path / "infer.csv"
    infer_manifest.write_text("".join(f"s3://{b}/raw,s3://{b}/predicted,model={model}\n" for b in labelled_buckets))
    infer = run_flow("dispatch", tmp_path, "--flow", "infer", "--manifest", str(infer_manifest), env=s3_server.env)
    assert infer.ok, infer.output[-3000:]
    data = infer.client_run().data
    chosen = [selector_says("infer", f"s3://{b}/raw") for b in labelled_buckets]
    assert [p["data_region"] for p in chosen] == ["us-east-1", "eu-west-1"]
    assert [(r["region"], r["place"], r["status"]) for r in data.rows] == [
        (p["region"], p, "succeeded") for p in chosen
    ]
    labelled = {b: len((d / "labels.csv").read_text().splitlines()) - 1 for b, d in labelled_buckets.items()}
    per_bucket = IMAGES_PER_BUCKET + 2 + EXTRA_FILES
    assert data.summary["images"] == 2 * per_bucket == sum(r["summary"]["images"] for r in data.rows)
    assert data.summary["labelled"] == sum(labelled.values())
    assert all(r["run"].startswith("InferFlow/") for r in data.rows)


def test_dispatch_checks_row_parameters_against_the_child_flow(
    s3_server: S3Server, labelled_buckets: dict[str, Path], tmp_path: Path
) -> None:
    manifest = tmp_path / "bad.csv"
    manifest.write_text("us-east-1,s3://train-us/raw,s3://train-us/x,epochs=many\n")
    run = run_flow("dispatch", tmp_path, "--flow", "train", "--manifest", str(manifest), env=s3_server.env)
    assert not run.ok
    assert "--manifest line 1 epochs 'many': expected a value of type int; fix the value of epochs" in run.output
    assert "TrainFlow/" not in run.output  # nothing ran
