"""The processes a test started: the descendants of its own Popen, found by walking /proc.

Other work runs beside the tests on these machines: a test signals only what it started.
"""

from __future__ import annotations

from pathlib import Path


def parents() -> dict[int, int]:
    """pid -> parent pid of every process now running."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # Field 4 of stat is the parent PID; the command (field 2) may hold spaces: split after it.
                found[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return found


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents().items():
        children.setdefault(parent, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def command_line(pid: int) -> list[str]:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def option(arguments: list[str], name: str) -> str | None:
    """The value after ``name`` in a command line, None when absent."""
    return arguments[arguments.index(name) + 1] if name in arguments[:-1] else None


def metaflow_tasks(root: int, step: str, retry_count: int) -> dict[int, int]:
    """Node index -> pid of the Metaflow tasks of ``step``'s attempt ``retry_count`` below ``root``
    (a @parallel gang's control task is node 0, ``--split-index k`` is node k)."""
    found = {}
    for pid in descendants(root):
        arguments = command_line(pid)
        if option(arguments, "step") == step and option(arguments, "--retry-count") == str(retry_count):
            found[int(option(arguments, "--split-index") or 0)] = pid
    return found
