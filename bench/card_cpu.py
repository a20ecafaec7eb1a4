"""CPU of live-card refreshes per shard-task minute, on a real local run.

    .venv/bin/python bench/card_cpu.py [--flow infer|preprocess] [--images 600] [--repo DIR]

Runs the flow on generated sample photos as one shard (one thread), samples every process below
the run's own process every 20 ms (/proc/<pid>/stat: user + system time, the last value seen before
it exits), and sums the ``card create`` processes apart from the shard task itself. ``--repo``
runs another checkout's flow files (e.g. main, for a before/after figure). Wall-clock figures need
an idle machine; CPU seconds barely depend on contention.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

from steps.demo.sample_data import generate
from tests.support.models import save_bundle
from tests.support.offline import LOOPBACK_ONLY_ENV
from tests.support.processes import command_line, descendants

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def kind(cmdline: list[bytes]) -> str:
    """A task's step name, or ``card <step>`` for a card process (its pathspec follows ``create``)."""
    if b"card" in cmdline and b"create" in cmdline:
        return "card " + cmdline[cmdline.index(b"create") + 1].decode().split("/")[1]
    if b"step" in cmdline:
        return cmdline[cmdline.index(b"step") + 1].decode()
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flow", default="infer", choices=("infer", "preprocess"))
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--repo", type=Path, default=Path(common.__file__).resolve().parent.parent)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="card-cpu-"))
    generate(work / "images", count=args.images, seed=7)
    flow_args = ["--input", str(work / "images"), "--output", str(work / "out")]
    flow_args += ["--shard-size", str(args.images * 2), "--threads", "1"]
    if args.flow == "infer":
        flow_args += ["--model", str(save_bundle(work / "model.pt")), "--workers", "1"]
    env = {**os.environ, **LOOPBACK_ONLY_ENV, "PYTHONPATH": str(args.repo), "USER": os.environ.get("USER") or "bench"}
    env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = str(work)
    process = subprocess.Popen(
        [sys.executable, str(args.repo / "flows" / f"{args.flow}.py"), "--no-pylint", "run", *flow_args],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen: dict[int, tuple[str, float]] = {}
    lifetime: dict[int, tuple[float, float]] = {}  # first and last time seen
    while process.poll() is None:
        now = time.monotonic()
        for pid in descendants(process.pid):
            cpu = cpu_seconds(pid)
            if cpu is not None:
                seen[pid] = (seen[pid][0] if pid in seen else kind(command_line(pid)), cpu)
                lifetime[pid] = (lifetime.get(pid, (now, now))[0], now)
        time.sleep(0.02)
    output = process.stdout.read().decode()
    if process.returncode:
        sys.exit(output[-3000:])
    by_kind: dict[str, list[float]] = {}
    for what, cpu in seen.values():
        by_kind.setdefault(what, []).append(cpu)
    print(f"repo: {args.repo}  flow: {args.flow}  images: {args.images}")
    for what, cpus in sorted(by_kind.items()):
        print(f"  {what:22s} {len(cpus):3d} processes  {sum(cpus):7.2f} s CPU")
    shard_pid = next(pid for pid, (what, _) in seen.items() if what == "process_shard")
    minutes = (lifetime[shard_pid][1] - lifetime[shard_pid][0]) / 60
    cards = by_kind.get("card process_shard", [])
    print(f"shard task: {minutes:.2f} min wall, {seen[shard_pid][1]:.2f} s CPU")
    each = sum(cards) / max(len(cards), 1)
    print(f"shard card: {len(cards)} card processes, {sum(cards):.2f} s CPU, {each:.2f} s each")
    print(f"ratio: shard card CPU per shard-task minute = {sum(cards) / minutes / 60:.3f} of a core")


if __name__ == "__main__":
    main()
