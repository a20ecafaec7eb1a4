"""Find the processes a test started, and only those.

Tests signal processes from outside (a spot loss, a dead rank) but these machines run other work beside
them: a victim is always chosen among the descendants of a process the test itself started, never by
its command line alone.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROC = Path("/proc")


def parent_pid(pid: int) -> int | None:
    """The parent PID of ``pid`` (field 4 of /proc/<pid>/stat), or None once it has gone."""
    try:
        # The command (field 2) may hold spaces and parentheses: split after its last ")".
        return int((PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def command_line(pid: int) -> list[bytes]:
    """The arguments of ``pid``, or [] once it has gone."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children, grandchildren, ...), ``root`` excluded, sorted.

    One pass over /proc builds the parent links (/proc/<pid>/task/*/children needs a kernel option
    this machine may lack), then a walk from ``root`` keeps only its tree.
    """
    children: dict[int, list[int]] = defaultdict(list)
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (ppid := parent_pid(int(entry.name))) is not None:
            children[ppid].append(int(entry.name))
    found: list[int] = []
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return sorted(found)


@contextmanager
def look_alike_task(step: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process outside any flow's tree whose command line looks like a first attempt of ``step``
    (as another run's task on this machine would): the tests' kill helpers must leave it alone."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "step", step, "--retry-count", "0"]
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def option(arguments: list[bytes], name: str) -> str | None:
    """The value after ``name`` in a command line, None when absent."""
    flag = name.encode()
    return arguments[arguments.index(flag) + 1].decode() if flag in arguments[:-1] else None


def metaflow_tasks(root: int, step: str, retry_count: int) -> dict[int, int]:
    """Node index -> pid of the Metaflow tasks of ``step``'s attempt ``retry_count`` below ``root``
    (a @parallel gang's control task is node 0, ``--split-index k`` is node k)."""
    found = {}
    for pid in descendants(root):
        arguments = command_line(pid)
        if option(arguments, "step") == step and option(arguments, "--retry-count") == str(retry_count):
            found[int(option(arguments, "--split-index") or 0)] = pid
    return found
