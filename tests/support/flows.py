"""Run flows as users do (real processes, each in its own working directory and .metaflow/), read their cards,
and kill their tasks from outside like a spot loss would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3

from tests.support.offline import LOOPBACK_ONLY_ENV
from tests.support.processes import command_line, descendants, parent_pid

REPO = Path(__file__).resolve().parents[2]
SPOT_BATCH = str(Path(sys.executable).with_name("spot-batch"))  # the installed console script


# Nothing in the tests may leave this machine: route every non-loopback HTTP(S) request to a
# dead proxy, keep AWS SDKs away from the metadata service and any real credentials.
LOOPBACK_ONLY = {**LOOPBACK_ONLY_ENV, "USER": os.environ.get("USER") or "tester"}


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint)

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    @property
    def env(self) -> dict[str, str]:
        return {"METAFLOW_S3_ENDPOINT_URL": self.endpoint}


def upload_dir(server: S3Server, directory: Path, uri: str) -> None:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    client = server.client()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            key = "/".join(p for p in (prefix, path.relative_to(directory).as_posix()) if p)
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())


@dataclass(frozen=True)
class FlowRun:
    """A finished flow run: its process result and its Metaflow client object."""

    process: subprocess.CompletedProcess
    workdir: Path

    @property
    def ok(self) -> bool:
        return self.process.returncode == 0

    @property
    def output(self) -> str:
        return self.process.stdout + self.process.stderr

    def client_run(self):
        """The Metaflow ``Run`` of this flow run (by the run id it printed, not the workdir's latest run),
        read from its own local metadata."""
        import re

        from metaflow import Run, metadata, namespace

        metadata(f"local@{self.workdir}")
        namespace(None)
        flow_name = next(line for line in self.output.splitlines() if "executing" in line).split()[3]
        run_id = re.search(r"\(run-id ([^)]+)\)", self.output).group(1)  # its own (the first), not a child's
        return Run(f"{flow_name}/{run_id}")


def run_flow(
    flow: str,
    workdir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    top_args: tuple[str, ...] = (),
    command: str = "run",
    timeout: int = 600,
) -> FlowRun:
    """Run ``flows/<flow>.py <command> <args>`` as a real process with ``workdir`` as cwd."""
    workdir.mkdir(parents=True, exist_ok=True)
    # Each task of a torch flow holds ~800 MB: bound the local fan-out so CI machines cope.
    workers = ("--max-workers", "4") if command in ("run", "resume") else ()
    process = subprocess.run(
        [sys.executable, str(REPO / "flows" / f"{flow}.py"), "--no-pylint", *top_args, command, *workers, *args],
        cwd=workdir,
        # Pin the local datastore to the workdir so a stray .metaflow/ in a parent is never used.
        env={**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(workdir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return FlowRun(process, workdir)


def card_text(flow: str, workdir: Path, pathspec: str) -> str:
    """The decoded content of a step's card, fetched as a user would (`card get`).

    Card HTML carries its components as base64 JSON in ``__MF_DATA__``; decode it so tests can
    look for the text and images people see.
    """
    import base64
    import re

    target = workdir / f"card-{pathspec.replace('/', '-')}.html"
    result = run_flow(flow, workdir, "get", pathspec, str(target), command="card")
    assert result.ok, result.output
    payloads = re.findall(r'__MF_DATA__\["[^"]+"\] = "([A-Za-z0-9+/=]+)"', target.read_text())
    assert payloads, "card has no data"
    return "\n".join(base64.b64decode(p).decode() for p in payloads)


def card_components(card: str) -> Iterator[dict]:
    """Every component of a decoded card (``card_text``), nested ones (pages, sections, tables) included."""
    import json

    stack: list = [json.loads(part) for part in card.splitlines() if part.startswith("{")]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "type" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def first_attempt_task_pids(root: int, step: str) -> list[int]:
    """PIDs of ``step`` tasks on their first attempt (from Metaflow's task command line) below ``root``,
    the flow process the test started: a look-alike task of another run on this machine is never picked."""
    pids = []
    for pid in descendants(root):
        cmdline = command_line(pid)
        is_task = b"step" in cmdline and step.encode() in cmdline and b"--retry-count" in cmdline
        if is_task and cmdline[cmdline.index(b"--retry-count") + 1] == b"0":
            pids.append(pid)
    return pids


def spawned_children(parent: int) -> list[int]:
    """PIDs of the multiprocessing-spawned children of ``parent`` (e.g. training ranks), oldest first."""
    return [
        pid
        for pid in descendants(parent)
        if parent_pid(pid) == parent and b"--multiprocessing-fork" in b"\0".join(command_line(pid))
    ]


def first_attempt_rank_pids(root: int, step: str) -> list[int]:
    """The last-spawned training rank of each first-attempt ``step`` task below ``root``."""
    return [children[-1] for task in first_attempt_task_pids(root, step) if (children := spawned_children(task))]


def run_flow_killing(
    flow: str,
    workdir: Path,
    *args: str,
    step: str,
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
    victims: Callable[[int, str], list[int]] = first_attempt_task_pids,
    poll_s: float = 0.01,
) -> tuple[FlowRun, bool]:
    """Run a flow, SIGKILL its first-attempt ``step`` task (or the processes ``victims(flow_pid, step)``
    names among the flow process's descendants) once ``ready()`` (a spot loss seen from outside: no hook
    in the code under test), and let ``@retry`` finish it. ``ready`` is polled every ``poll_s`` seconds
    (a listing of the loopback S3 server wants a longer interval than a glob of local files).

    Returns the run and whether the kill happened before the task finished on its own.
    """
    import signal
    import time

    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, str(REPO / "flows" / f"{flow}.py"), "--no-pylint", "run", *args],
        cwd=workdir,
        env={**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(workdir), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killed = False
    deadline = time.monotonic() + 300
    while process.poll() is None and not killed and time.monotonic() < deadline:
        if ready():
            for pid in victims(process.pid, step):
                os.kill(pid, signal.SIGKILL)
                killed = True
        time.sleep(poll_s)
    stdout, _ = process.communicate(timeout=300)
    return FlowRun(subprocess.CompletedProcess(process.args, process.returncode, stdout, ""), workdir), killed
