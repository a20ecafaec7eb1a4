"""Multi-region dispatch, end to end: two "regions" are two buckets on the loopback S3 server,
one created with an eu-west-1 location constraint, so the bucket-location lookup is real too."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.demo.sample_data import generate
from steps.io.storage import open_storage
from tests.support.flows import S3Server, run_flow, upload_dir

IMAGES_PER_BUCKET = 10
EXTRA_FILES = 6  # generate() adds a CMYK JPEG, a PNG, a greyscale JPEG and three bad files
BAD_FILES = 3


@pytest.fixture(scope="module")
def regional_buckets(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """region → input location, each holding its own small sample set."""
    client = s3_server.client()
    client.create_bucket(Bucket="images-us")
    client.create_bucket(Bucket="images-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    inputs = {}
    for region, bucket, seed in (("us-east-1", "images-us", 3), ("eu-west-1", "images-eu", 4)):
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
    assert [(r["region"], r["input"], r["output"]) for r in data.region_runs] == [
        ("eu-west-1", "s3://images-eu/raw", "s3://images-eu/preprocessed"),
        ("us-east-1", "s3://images-us/raw", "s3://images-us/preprocessed"),
    ]
    for region_run in data.region_runs:
        assert region_run["summary"]["images"] == per_bucket
        assert region_run["run"].startswith("PreprocessFlow/")
        # Each region's results stay in that region's bucket.
        written = open_storage(region_run["output"]).list()
        assert any(o.key.endswith(".jpg") for o in written)
    assert "Preprocessed 32 images" in run.output


def test_dispatch_rejects_an_output_that_collides(
    s3_server: S3Server, regional_buckets: dict[str, str], tmp_path: Path
) -> None:
    run = run_flow(
        "dispatch",
        tmp_path,
        "--inputs",
        ",".join(regional_buckets.values()),
        "--output",
        "s3://images-us/same",
        env=s3_server.env,
    )
    assert not run.ok
    assert "expected a distinct output per input" in run.output
