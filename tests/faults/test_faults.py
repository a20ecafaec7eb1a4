"""Fault injection on real flow runs: SIGKILL, spot notices, flaky S3, resume after failure.

Each case checks the output with `spot-batch verify` and against an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from steps.demo.sample_data import generate
from steps.inference.predictions import load_predictions
from steps.io.local_storage import LocalStorage
from steps.planning.inputs import list_inputs
from steps.verify import verify
from tests.support.fakes import fake_imds, flaky_s3_proxy
from tests.support.flows import REPO, SPOT_BATCH, S3Server, card_text, run_flow, run_flow_killing, upload_dir
from tests.support.models import save_bundle
from tests.support.plans import plan_shards
from tests.support.processes import look_alike_task

ONE_SHARD = ("--shard-size", "1000", "--threads", "1", "--chunk-size", "4")


def one_shard(source: object, output: object) -> tuple[str, ...]:
    """PreprocessFlow's arguments for ``source`` → ``output`` as one shard of 4-image chunks."""
    return ("--input", str(source), "--output", str(output), *ONE_SHARD)


@pytest.fixture(scope="module")
def fault_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fault-input")
    generate(directory, count=60, seed=7)
    return directory


@pytest.fixture(scope="module")
def reference_output(fault_input: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run, for byte-for-byte comparison."""
    base = tmp_path_factory.mktemp("reference")
    result = run_flow("preprocess", base / "wd", *one_shard(fault_input, base / "out"))
    assert result.ok, result.output
    return base / "out"


def output_digests(out: Path) -> dict[str, str]:
    """Every resized/edge file's bytes, by relative path."""
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for sub in ("resized", "edges")
        for p in (out / sub).rglob("*")
        if p.is_file()
    }


def assert_exactly_once(out: Path, fault_input: Path, reference: Path) -> None:
    check = verify(str(out), str(fault_input))
    assert check.ok, check.problems
    assert output_digests(out) == output_digests(reference)
    assert not [p for p in out.rglob(".tmp-*")], "temporary files left behind"


def middle_shard(images: Path, shard_size: int) -> str:
    """The name of a shard the flows will plan for ``images`` (its middle one), known before the run."""
    shards = plan_shards(list_inputs(LocalStorage(images)), target_size=shard_size, max_shards=100).shards
    assert len(shards) > 2
    return shards[len(shards) // 2].name


def count(directory: Path, pattern: str) -> int:
    return len(list(directory.glob(pattern))) if directory.exists() else 0


# "between chunks" is the default run's representative; the other kill points are slow variants.
KILL_POINTS = [
    pytest.param("before any commit", marks=pytest.mark.slow),
    "between chunks",
    pytest.param("late, random", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_mid_shard_is_retried_to_an_identical_output(
    point: str, fault_input: Path, reference_output: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    chunks = out / "_ledger" / "all"
    ready = {
        "before any commit": lambda: count(out, "resized/*.jpg") >= 1 and count(chunks, "*.parquet") == 0,
        "between chunks": lambda: count(chunks, "*.parquet") >= 2,
        "late, random": lambda: count(out, "resized/*.jpg") >= random.Random(str(tmp_path)).randint(20, 55),
    }[point]
    # Another run's task on this machine, same command line: the kill must spare it.
    with look_alike_task("process_shard") as stranger:
        result, killed = run_flow_killing(
            "preprocess",
            tmp_path / "wd",
            *one_shard(fault_input, out),
            step="process_shard",
            ready=ready,
        )
        assert stranger.poll() is None, "a process outside the flow's tree was killed"
    assert killed, f"the task finished before the kill point {point!r}"
    assert result.ok, result.output
    assert "(retry)" in result.output
    assert_exactly_once(out, fault_input, reference_output)
    # The retry's live card says what the killed attempt had committed.
    task = next(iter(result.client_run()["process_shard"]))
    card = card_text("preprocess", result.workdir, task.pathspec.split("/", 1)[1])
    reused, chunks = task.data.shard_stats["reused_chunks"], task.data.shard_stats["chunks"]
    if point == "between chunks":
        assert reused >= 2
    assert "attempt 1" in card  # Metaflow numbers attempts from 0, as its UI shows them
    assert f"{reused} of {chunks} chunks" in card if reused else "nothing was committed" in card


def test_spot_notice_commits_exits_and_the_retry_finishes(
    fault_input: Path, reference_output: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # The notice comes at the first poll: always before the last of the 17 chunks.
    with fake_imds(notice_after_s=0.0) as imds:
        result = run_flow(
            "preprocess",
            tmp_path / "wd",
            *one_shard(fault_input, out),
            env={"SPOT_BATCH_METADATA_URL": imds, "SPOT_BATCH_POLL_SECONDS": "0.1"},
        )
    assert result.ok, result.output
    assert "spot interruption notice" in result.output
    assert "SpotInterruption" in result.output and "will be retried" in result.output
    summary = result.client_run().data.summary
    assert summary["processed"] + summary["rejected"] == summary["images"]
    assert_exactly_once(out, fault_input, reference_output)


def test_throttling_and_5xx_from_s3_do_not_fail_the_run(
    fault_input: Path, reference_output: Path, tmp_path: Path, s3_server: S3Server
) -> None:
    bucket = s3_server.make_bucket("flaky")
    upload_dir(s3_server, fault_input, f"{bucket}/in")
    # About one request in 20 is answered 503 SlowDown: a dozen or so over the run.
    with flaky_s3_proxy(s3_server.endpoint, failure_rate=0.05) as proxy:
        result = run_flow(
            "preprocess",
            tmp_path / "wd",
            *one_shard(f"{bucket}/in", f"{bucket}/out"),
            env={"METAFLOW_S3_ENDPOINT_URL": proxy},
        )
    assert result.ok, result.output
    check = verify(f"{bucket}/out", f"{bucket}/in")
    assert check.ok, check.problems
    assert result.client_run().data.summary["processed"] == len(list(reference_output.glob("resized/*")))


def test_deterministic_failure_fails_fast_and_resume_reuses_finished_shards(fault_input: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--input", str(fault_input), "--output", str(out), "--shard-size", "20", "--threads", "2"]
    # Make one shard's completion marker unwritable: a directory where its manifest file goes.
    shard = middle_shard(fault_input, 20)
    (out / "_manifests" / f"{shard}.parquet").mkdir(parents=True)
    failed = run_flow("preprocess", tmp_path / "wd", *args)
    assert not failed.ok
    assert "not retrying: IsADirectoryError is deterministic" in failed.output
    assert "This failed task will not be retried" in failed.output

    (out / "_manifests" / f"{shard}.parquet").rmdir()
    resumed = run_flow("preprocess", tmp_path / "wd", command="resume")  # resume reuses the parameters
    assert resumed.ok, resumed.output
    # start and the shards that finished are cloned; the failed shard resumes from its committed chunks.
    assert resumed.output.count("Cloning previously run task") >= 3
    assert f"shard {shard}: resuming, 1/1 chunks already committed" in resumed.output
    check = verify(str(out), str(fault_input))
    assert check.ok, check.problems


def test_verify_command_reports_gaps(fault_input: Path, reference_output: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference_output, out)
    ok = subprocess.run(
        [SPOT_BATCH, "verify", str(out), "--input", str(fault_input)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("OK:"), ok.stdout
    victim = sorted((out / "resized").iterdir())[3]
    victim.unlink()
    (out / "_manifests" / "all.parquet").unlink()
    broken = subprocess.run(
        [SPOT_BATCH, "verify", str(out), "--input", str(fault_input)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert broken.returncode == 1
    assert "shard all: no manifest (incomplete)" in broken.stdout
    assert "missing from every manifest" in broken.stdout


INFER_ONE_SHARD = ("--shard-size", "1000", "--chunk-size", "4", "--batch-size", "4", "--workers", "1", "--threads", "1")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_bundle(tmp_path_factory.mktemp("model") / "model.pt"))


@pytest.fixture(scope="module")
def reference_predictions(fault_input: Path, model_file: str, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    base = tmp_path_factory.mktemp("infer-reference")
    result = run_flow(
        "infer",
        base / "wd",
        "--input",
        str(fault_input),
        "--output",
        str(base / "out"),
        "--model",
        model_file,
        *INFER_ONE_SHARD,
    )
    assert result.ok, result.output
    return load_predictions(str(base / "out")).sort_values("key").reset_index(drop=True)


# The default run's representatives are tests/flows/test_infer_flow.py's two killed InferFlow runs.
@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkilled_inference_is_retried_to_identical_predictions(
    point: str,
    fault_input: Path,
    model_file: str,
    reference_predictions: pd.DataFrame,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    parts = out / "predictions" / "all"
    ready = {
        "before any commit": lambda: count(out, "_plan/*.jsonl") == 1 and count(parts, "*.parquet") == 0,
        "between chunks": lambda: count(parts, "*.parquet") >= 2,
        "late, random": lambda: count(parts, "*.parquet") >= random.Random(str(tmp_path)).randint(5, 14),
    }[point]
    result, killed = run_flow_killing(
        "infer",
        tmp_path / "wd",
        "--input",
        str(fault_input),
        "--output",
        str(out),
        "--model",
        model_file,
        *INFER_ONE_SHARD,
        step="process_shard",
        ready=ready,
    )
    assert killed, f"the task finished before the kill point {point!r}"
    assert result.ok, result.output
    check = verify(str(out), str(fault_input))
    assert check.ok, check.problems
    predictions = load_predictions(str(out)).sort_values("key").reset_index(drop=True)
    assert predictions[["key", "status", "label"]].equals(reference_predictions[["key", "status", "label"]])
    assert (predictions["score"] - reference_predictions["score"]).abs().max() < 1e-5


@pytest.mark.slow  # the PreprocessFlow case above is the default run's representative
def test_infer_resume_after_a_failed_run_reuses_finished_shards(
    fault_input: Path, model_file: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "--input",
        str(fault_input),
        "--output",
        str(out),
        "--model",
        model_file,
        "--shard-size",
        "20",
        "--chunk-size",
        "8",
        "--batch-size",
        "8",
    ]
    shard = middle_shard(fault_input, 20)
    (out / "_manifests" / f"{shard}.parquet").mkdir(parents=True)  # one shard cannot write its marker
    failed = run_flow("infer", tmp_path / "wd", *args)
    assert not failed.ok
    assert "not retrying: IsADirectoryError is deterministic" in failed.output

    (out / "_manifests" / f"{shard}.parquet").rmdir()
    resumed = run_flow("infer", tmp_path / "wd", command="resume")
    assert resumed.ok, resumed.output
    assert resumed.output.count("Cloning previously run task") >= 3
    check = verify(str(out), str(fault_input))
    assert check.ok, check.problems
