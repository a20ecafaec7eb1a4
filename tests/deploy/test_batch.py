"""`run --with batch`, end to end, on a local AWS Batch (tests/support/batch_server.py).

PreprocessFlow and InferFlow: Metaflow submits every task as a Batch job to a moto server on
127.0.0.1; the server runs each job's container command as a local process (as a Batch container
would, from the code package in S3) and SIGKILLs one shard task mid-shard, the way a spot reclaim
ends an instance. The run must still finish, the killed task's retry must resume from the
committed chunks, and the jobs must carry the resources, image and queue the flow and the
configuration ask for.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from steps.planning.prefixes import shard_prefix
from steps.verify import verify
from tests.support.flows import REPO, S3Server, run_flow, upload_dir
from tests.support.models import save_bundle
from tests.support.remote_harness import IMAGE, create_batch_queue, flow_graph, metaflow_env

pytestmark = pytest.mark.batch

START_TIMEOUT_S = 60


@dataclass(frozen=True)
class LocalBatch:
    """The running batch_server.py: its endpoint and what it recorded."""

    state: Path
    endpoint: str

    @property
    def s3(self) -> S3Server:
        return S3Server(self.endpoint)

    def kill_first_attempt(self, flow: str, step: str, on_put: str) -> None:
        """SIGKILL the first attempt of ``flow``'s ``step`` when it PUTs a key matching ``on_put``."""
        (self.state / "kill.json").write_text(json.dumps({"flow": flow, "step": step, "on_put": on_put}))

    def jobs(self, flow: str, step: str) -> list[dict[str, Any]]:
        """Finished jobs of ``flow``'s ``step``, in submission order (Metaflow names a job
        ``<user>-<Flow>-<run>-<step>-<task>-<retry count>``)."""
        lines = (self.state / "jobs.jsonl").read_text().splitlines()
        found = [json.loads(line) for line in lines]
        mine = (j for j in found if f"-{flow}-" in j["jobName"] and f"-{step}-" in j["jobName"])
        return sorted(mine, key=lambda j: j["jobName"])


@pytest.fixture(scope="module")
def local_batch(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[LocalBatch]:
    """batch_server.py as a child process; ``s3_server`` first, so the loopback env is in place."""
    state = tmp_path_factory.mktemp("local-batch")
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.batch_server", str(state)],
        cwd=REPO,
        stdout=(state / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (state / "endpoint").exists():
        assert server.poll() is None and time.monotonic() < deadline, (state / "server.log").read_text()
        time.sleep(0.2)
    yield LocalBatch(state, (state / "endpoint").read_text())
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)


def requirements(job: dict[str, Any]) -> dict[str, str]:
    return {r["type"]: r["value"] for r in job["containerOverrides"]["resourceRequirements"]}


def one_shard(sample_dir: Path, into: Path) -> list[str]:
    """Copy the sample files of the largest one-hex-digit shard: one shard task, killed and retried
    (each Batch job costs the test ~12 s: the code package, the step and Metaflow's log uploads)."""
    by_prefix: dict[str, list[Path]] = defaultdict(list)
    for path in sample_dir.iterdir():
        if path.name != "labels.csv":
            by_prefix[shard_prefix(path.name, 1)].append(path)
    into.mkdir()
    for path in max(by_prefix.values(), key=len):
        shutil.copy(path, into / path.name)
    return sorted(p.name for p in into.iterdir())


@pytest.fixture
def batch_env(local_batch: LocalBatch, tmp_path: Path) -> dict[str, str]:
    """Metaflow on the local Batch: S3 datastore, job queue, image."""
    bucket = local_batch.s3.make_bucket(f"datastore-{uuid.uuid4().hex[:12]}")[len("s3://") :]
    return metaflow_env(local_batch.endpoint, bucket, create_batch_queue(local_batch.endpoint), tmp_path / "home")


@dataclass(frozen=True)
class Case:
    flow: str
    flow_class: str
    step: str  # the foreach step whose first shard task is killed
    commit: str  # the S3 key of its second committed chunk: the kill lands mid-shard
    args: tuple[str, ...]
    model: str = "bundle"  # InferFlow: a TrainFlow bundle, or the README's own model (python:) from S3

    @property
    def name(self) -> str:
        return self.flow if self.flow != "infer" else f"infer-{self.model}"


CASES = [
    Case(
        "preprocess",
        "PreprocessFlow",
        "process_shard",
        r"_ledger/.+/chunk-00001\.parquet$",
        ("--threads", "2", "--chunk-size", "1"),
    ),
    Case(
        "infer",
        "InferFlow",
        "process_shard",
        r"predictions/.+/part-00001\.parquet$",
        ("--chunk-size", "2", "--batch-size", "2", "--workers", "1", "--threads", "1"),
    ),
    Case(
        "infer",
        "InferFlow",
        "process_shard",
        r"predictions/.+/part-00001\.parquet$",
        ("--chunk-size", "2", "--batch-size", "2", "--workers", "1", "--threads", "1"),
        model="python",
    ),
]


# PreprocessFlow is the default run's representative; InferFlow (GPU requests, a model) is slow.
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.flow == "infer" else []) for c in CASES]
)
def test_flow_runs_on_batch_and_survives_a_killed_task(
    case: Case,
    local_batch: LocalBatch,
    batch_env: dict[str, str],
    *,
    sample_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3 = local_batch.s3
    bucket = s3.make_bucket(f"{case.flow}-data")
    keys = one_shard(sample_dir, tmp_path / "images")
    upload_dir(s3, tmp_path / "images", f"{bucket}/raw")
    model_args: tuple[str, ...] = ()
    if case.flow == "infer" and case.model == "bundle":
        model = save_bundle(tmp_path / "model" / "model.pt")
        upload_dir(s3, model.parent, f"{bucket}/model")
        model_args = ("--model", f"{bucket}/model/{model.name}")
    elif case.flow == "infer":  # the README's model file, read from S3 by start and by each task
        from tests.unit.inference.test_user_models import readme_model

        (tmp_path / "model").mkdir()
        model = readme_model(tmp_path / "model")
        upload_dir(s3, model.parent, f"{bucket}/model")
        model_args = ("--model", f"python:{bucket}/model/{model.name}:build")
    # The first shard task dies while committing its second chunk, as if its instance vanished.
    local_batch.kill_first_attempt(case.flow_class, case.step, case.commit)

    run = run_flow(
        case.flow,
        tmp_path / "work",
        "--with",
        "batch",
        "--input",
        f"{bucket}/raw",
        "--output",
        f"{bucket}/out",
        "--prefix-width",
        "1",
        *case.args,
        *model_args,
        env=batch_env,
    )
    assert run.ok, run.output[-5000:]

    shard_jobs = local_batch.jobs(case.flow_class, case.step)
    (killed,) = [j for j in shard_jobs if j["statusReason"]]
    assert killed["exitCode"] == 137 and killed["statusReason"].startswith("Host EC2")
    retry = killed["jobName"][:-2] + "-1"  # Metaflow's retry is a new Batch job, retry count in its name
    assert [j["exitCode"] for j in shard_jobs if j["jobName"] == retry] == [0]
    assert len(shard_jobs) == 2  # one shard, one retry
    assert "resuming, 1/" in run.output  # the retry kept the committed chunk

    # The run's own region comes from its Batch job's environment (Metaflow sets the driver's
    # AWS_DEFAULT_REGION there), judged against the selector's choice: start logs the verdict and
    # end logs it again from the summary (the tasks' logs stream into the run's output).
    verdict = [line for line in run.output.splitlines() if f"This run is in {os.environ['AWS_DEFAULT_REGION']}" in line]
    assert len(verdict) >= 2, run.output[-5000:]

    step = flow_graph(REPO / "flows" / f"{case.flow}.py", tmp_path)[case.step]
    expected = {
        "VCPU": step.attribute("resources", "cpu"),
        "MEMORY": step.attribute("resources", "memory"),
        "GPU": step.attribute("resources", "gpu"),
    }
    for job in shard_jobs:
        assert job["image"] == IMAGE
        assert requirements(job) == {k: str(v) for k, v in expected.items() if v}

    # Every input accounted for exactly once, outputs complete, despite the kill.
    monkeypatch.setenv("METAFLOW_S3_ENDPOINT_URL", local_batch.endpoint)
    check = verify(f"{bucket}/out", f"{bucket}/raw")
    assert check.ok, check.problems
    assert check.inputs == len(keys)
