"""PreprocessFlow, really run, on inputs that are wrong or that grow: bad configuration and an empty
input fail in start, in one line; images added later are processed exactly once by the same command."""

import shutil
from pathlib import Path

import pytest

from steps.demo.sample_data import generate
from steps.verify import verify
from tests.support.flows import S3Server, run_flow


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--input", "/no/such/dir"), "--input '/no/such/dir': expected an existing directory of images"),
        (("--device", "tpu"), "--device 'tpu': expected cpu or cuda"),
        (("--input", "s3://missing-bucket/x"), "bucket 'missing-bucket': expected an existing S3 bucket"),
        (("--prefix-width", "2", "--max-shards", "4"), "--prefix-width 2: expected at most 4 shards"),
    ],
)
def test_bad_configuration_fails_in_start_with_one_line(
    args: tuple[str, ...], message: str, sample_dir: Path, tmp_path: Path, s3_server: S3Server
) -> None:
    params = {"--input": str(sample_dir), "--output": str(tmp_path / "out")}
    extra = []
    for name, value in zip(args[::2], args[1::2], strict=True):
        if name in params:
            params[name] = value
        else:
            extra += [name, value]
    result = run_flow("preprocess", tmp_path / "wd", *[x for kv in params.items() for x in kv], *extra)
    assert not result.ok
    assert message in result.output
    assert "process_shard" not in result.output  # failed before any fan-out


def test_empty_input_fails_in_start(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_flow(
        "preprocess", tmp_path / "wd", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")
    )
    assert not result.ok
    assert "expected at least one object" in result.output


# The first two runs are the default run's representative; new settings after them (fewer shards,
# a layout kept) are a slow variant, their planning tested in process in tests/unit/output/test_reruns.py.
@pytest.mark.parametrize("settings_changed", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_reruns_after_new_images_and_new_settings_keep_inputs_exactly_once(
    sample_dir: Path, tmp_path: Path, settings_changed: bool
) -> None:
    """The issue's case: a one-shard (width 0) output, 30 more images, the same command again."""
    images, out = tmp_path / "images", tmp_path / "out"
    shutil.copytree(sample_dir, images)

    def rerun(*settings: str) -> dict:
        result = run_flow("preprocess", tmp_path / "wd", "--input", str(images), "--output", str(out), *settings)
        assert result.ok, result.output
        check = verify(str(out), str(images))
        assert check.ok, check.problems
        assert check.verdict(str(out)).startswith(f"OK: {check.inputs}/{check.inputs} input keys")
        return {"output": result.output, **result.client_run().data.summary}

    small = ("--shard-size", "70", "--max-shards", "4", "--threads", "2", "--chunk-size", "16")
    first = rerun(*small)
    assert first["shards"] == 1 and first["stale_files"] == 0

    generate(images / "new", count=30, seed=99)  # a second upload lands beside the first
    (images / "new" / "labels.csv").unlink()
    grown = rerun(*small)
    assert "planning" in grown["output"] and "anew, superseding its earlier shards: its one shard" in grown["output"]
    assert "retired 1 superseded shards (all)" in grown["output"]
    # 90 images at ~70 per shard: two ranges of two-digit prefixes, none below the target.
    assert grown["images"] == first["images"] + 36 and grown["shards"] == 2
    assert grown["stale_files"] >= 3 and "stale files of earlier runs removed" in grown["output"]

    if not settings_changed:
        return
    fewer = rerun("--shard-size", "70", "--max-shards", "1", "--threads", "2", "--chunk-size", "16")
    assert "anew, superseding its earlier shards: its 2 shards exceed --max-shards 1" in fewer["output"]
    assert fewer["shards"] == 1 and "retired 2 superseded shards" in fewer["output"]
    kept = rerun("--shard-size", "1000", "--max-shards", "2")
    assert "keeping prefix width 1 of the earlier run" in kept["output"]
    assert kept["skipped_shards"] == kept["shards"] and kept["stale_files"] == 0
