"""A local AWS Batch for tests: moto on 127.0.0.1 whose Batch jobs run as local processes.

    python -m tests.support.batch_server STATE_DIR     (from the repository root)

moto implements the whole AWS API (S3 for Metaflow's datastore, Batch, IAM, EC2) but runs Batch
jobs in docker. Here each submitted job's container command runs as a local process instead,
in its own empty working directory, with the environment a Batch container gets: the job's
environment variables plus ``AWS_BATCH_JOB_ID``, ``AWS_BATCH_JOB_ATTEMPT``, ``AWS_BATCH_CE_NAME``,
``AWS_BATCH_JQ_NAME`` and ``AWS_EXECUTION_ENV``.

Files in STATE_DIR:
  endpoint          written when the server is up: ``http://127.0.0.1:PORT``
  kill.json         optional: ``{"flow": F, "step": S, "on_put": REGEX}``. When a running first
                    attempt (retry 0) of flow F's step S PUTs an S3 key matching REGEX, its whole
                    process group (a job this server started, in its own session) is SIGKILLed
                    before the object is stored — the instance vanishing mid-write, as on a spot
                    reclaim. Once per flow and step; run one task at a time to target it.
  jobs.jsonl        one record per finished job (name, overrides, image, exit code, reason)
  jobs/<id>/        each job's working directory, ``output.log`` = its stdout + stderr

SAFETY: Metaflow probes the EC2 metadata address when ``AWS_BATCH_JOB_ID`` is set. This server
and every job process disable the AWS metadata lookups and send any non-loopback HTTP(S) to a
dead proxy on 127.0.0.1:1, so nothing leaves the machine.
"""

from __future__ import annotations

import os

from tests.support.offline import LOOPBACK_ONLY_ENV as LOOPBACK_ONLY

os.environ.update(LOOPBACK_ONLY)  # before boto3/moto are imported

import json
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from moto.batch.models import Job
from moto.batch.utils import JobStatus
from moto.s3.models import S3Backend
from moto.server import ThreadedMotoServer

# What the container image provides: the project's Python and its dependencies (so Metaflow's
# bootstrap skips `pip install boto3`), like docker/Dockerfile.
IMAGE_ENV = {
    "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "METAFLOW_SKIP_INSTALL_DEPENDENCIES": "1",
}
POLL_S = 0.2


class LocalBatch:
    def __init__(self, state: Path) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._killed_once: set[str] = set()
        self._running: dict[Job, subprocess.Popen[bytes]] = {}

    def kill_on_put(self, key: str) -> bool:
        """Called for every S3 PUT: SIGKILL the targeted job if ``key`` matches the rule."""
        path = self.state / "kill.json"
        if not path.exists():
            return False
        rule = json.loads(path.read_text())
        if not re.search(rule["on_put"], key):
            return False
        with self._lock:
            # Metaflow names jobs {user}-{flow}-{run}-{step}-{task}-{retry}.
            targets = [
                (job, process)
                for job, process in self._running.items()
                if f"-{rule['flow']}-" in job.job_name
                and f"-{rule['step']}-" in job.job_name
                and job.job_name.endswith("-0")
            ]
            target = f"{rule['flow']}.{rule['step']}"
            if target in self._killed_once or not targets:
                return False
            self._killed_once.add(target)
            # Only jobs this server started and has not reaped are in _running (see run).
            for job, process in targets:
                job.job_stopped_reason = "Host EC2 (instance i-0local) terminated."
                os.killpg(process.pid, signal.SIGKILL)
        return True

    def run(self, job: Job) -> None:
        """Replaces moto's docker runner: Job.run, on the job's own thread."""
        job.status = JobStatus.RUNNING
        job.job_started_at = datetime.now()
        job.log_stream_name = job._stream_name
        job._start_attempt()
        workdir = self.state / "jobs" / job.job_id
        workdir.mkdir(parents=True)
        environment = {e["name"]: e["value"] for e in job._get_container_property("environment", [])}
        env = {
            **IMAGE_ENV,
            **LOOPBACK_ONLY,
            "HOME": str(workdir),
            **environment,
            "AWS_BATCH_JOB_ID": job.job_id,
            "AWS_BATCH_JOB_ATTEMPT": "1",
            "AWS_BATCH_CE_NAME": job.job_queue.environments[0].name,
            "AWS_BATCH_JQ_NAME": job.job_queue.name,
            "AWS_EXECUTION_ENV": "AWS_ECS_EC2",
        }
        command = job._add_parameters_to_command(job._get_container_property("command", []))
        with (workdir / "output.log").open("wb") as log:
            process = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            with self._lock:
                self._running[job] = process
            while True:
                # Reap and signal under one lock: a group is only signalled while its leader, the job
                # process this server started, is unreaped, so its ID cannot belong to anyone else.
                with self._lock:
                    if process.poll() is not None:
                        del self._running[job]
                        break
                    if job.stop:  # TerminateJob / CancelJob
                        os.killpg(process.pid, signal.SIGKILL)
                time.sleep(POLL_S)
        job.exit_code = process.returncode if process.returncode >= 0 else 128 - process.returncode
        job._mark_stopped(success=process.returncode == 0)
        self.record(job)

    def record(self, job: Job) -> None:
        entry = {
            "jobId": job.job_id,
            "jobName": job.job_name,
            "jobQueue": job.job_queue.name,
            "image": job.job_definition.container_properties["image"],
            "jobDefinitionRetryStrategy": job.job_definition.retry_strategy,
            "containerOverrides": {k: v for k, v in job.container_overrides.items() if k != "environment"},
            "exitCode": job.exit_code,
            "statusReason": job.job_stopped_reason,
            "log": str(self.state / "jobs" / job.job_id / "output.log"),
        }
        with self._lock, (self.state / "jobs.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def stop_all(self) -> None:
        with self._lock:
            for process in self._running.values():
                os.killpg(process.pid, signal.SIGKILL)


def main(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    batch = LocalBatch(state)

    def run_locally(job: Job) -> None:
        batch.run(job)

    def put_object(backend: S3Backend, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        if batch.kill_on_put(key_name):
            raise ConnectionAbortedError(f"client killed while writing {bucket_name}/{key_name}")
        return store_object(backend, bucket_name, key_name, *args, **kwargs)

    Job.run = run_locally  # every Batch job this server creates runs as a local process
    store_object = S3Backend.put_object
    S3Backend.put_object = put_object
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    (state / "endpoint.tmp").write_text(f"http://{host}:{port}")
    (state / "endpoint.tmp").rename(state / "endpoint")
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping.wait(1):
        pass
    batch.stop_all()
    server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
