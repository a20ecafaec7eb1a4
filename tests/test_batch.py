"""`run --with batch`, end to end, on a local AWS Batch (tests/batch_server.py).

Metaflow submits every task as a Batch job to a moto server on 127.0.0.1; the server runs each
job's container command as a local process (as a Batch container would, from the code package in
S3) and the harness SIGKILLs one task mid-shard, the way a spot reclaim ends an instance. The run
must still finish, the killed task's retry must resume from the committed chunks, and the jobs
must carry the resources, image and queue the flow and the configuration ask for.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, S3Server, run_flow, upload_dir
from tests.remote_harness import IMAGE, create_batch_queue, flow_graph, metaflow_env

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

    def kill_first_attempt(self, step: str, bucket: str, after_key: str) -> None:
        """SIGKILL the first job of ``step`` once an object matching ``after_key`` is in ``bucket``."""
        (self.state / "kill.json").write_text(json.dumps({"step": step, "bucket": bucket, "after_key": after_key}))

    def jobs(self, step: str) -> list[dict[str, Any]]:
        """Finished jobs of ``step``, in submission order (the job name ends with the retry count)."""
        lines = (self.state / "jobs.jsonl").read_text().splitlines()
        found = [json.loads(line) for line in lines]
        return sorted((j for j in found if f"-{step}-" in j["jobName"]), key=lambda j: j["jobName"])


@pytest.fixture(scope="module")
def local_batch(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[LocalBatch]:
    """batch_server.py as a child process; ``s3_server`` first, so the loopback env is in place."""
    state = tmp_path_factory.mktemp("local-batch")
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "batch_server.py"), str(state)],
                              stdout=(state / "server.log").open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (state / "endpoint").exists():
        assert server.poll() is None and time.monotonic() < deadline, (state / "server.log").read_text()
        time.sleep(0.2)
    yield LocalBatch(state, (state / "endpoint").read_text())
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)


def requirements(job: dict[str, Any]) -> dict[str, str]:
    return {r["type"]: r["value"] for r in job["containerOverrides"]["resourceRequirements"]}


def test_preprocess_runs_on_batch_and_survives_a_killed_task(
    local_batch: LocalBatch, sample_dir: Path, tmp_path: Path
) -> None:
    s3 = local_batch.s3
    s3.make_bucket("spot-batch-datastore")
    upload_dir(s3, sample_dir, s3.make_bucket("spot-batch-in") + "/raw")
    s3.make_bucket("spot-batch-out")
    env = metaflow_env(local_batch.endpoint, "spot-batch-datastore", create_batch_queue(local_batch.endpoint),
                       tmp_path / "home")
    local_batch.kill_first_attempt("process_shard", "spot-batch-out", r"_ledger/.+/chunk-00000\.parquet$")

    # One worker: while the killed task runs, every chunk in the bucket is its own.
    run = run_flow(
        "preprocess", tmp_path / "work", "--with", "batch", "--max-workers", "1",
        "--input", "s3://spot-batch-in/raw", "--output", "s3://spot-batch-out/pre",
        "--shard-size", "24", "--threads", "2", "--chunk-size", "4",
        env=env,
    )
    assert run.ok, run.output[-5000:]

    shard_jobs = local_batch.jobs("process_shard")
    killed = [j for j in shard_jobs if j["killed"]]
    assert len(killed) == 1 and killed[0]["exitCode"] == 137 and killed[0]["jobName"].endswith("-0")
    retried = next(j for j in shard_jobs if j["jobName"] == killed[0]["jobName"][:-2] + "-1")
    assert retried["exitCode"] == 0
    assert "resuming" in Path(retried["log"]).read_text()

    step = flow_graph(REPO / "flows" / "preprocess.py", tmp_path)["process_shard"]
    for job in shard_jobs:
        assert job["image"] == IMAGE
        assert requirements(job) == {"VCPU": str(step.attribute("resources", "cpu")),
                                     "MEMORY": str(step.attribute("resources", "memory"))}
    # Every input is in exactly one shard manifest, despite the kill.
    client = s3.client()
    manifests = client.list_objects_v2(Bucket="spot-batch-out", Prefix="pre/_manifests/")["Contents"]
    rows = [r for m in manifests
            for r in pq.read_table(io.BytesIO(client.get_object(Bucket="spot-batch-out", Key=m["Key"])["Body"].read()))
            .column("key").to_pylist()]
    assert sorted(rows) == sorted(p.name for p in sample_dir.iterdir() if p.name != "labels.csv")
