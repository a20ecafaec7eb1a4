"""How a finished Metaflow run ended, read from its client ``Run``: what notifications and
DispatchFlow report.

Duck-typed over the Metaflow client objects (``Run`` → steps → tasks with ``successful``,
``exception``, ``stderr``, ``data``) so ``steps/`` stays free of Metaflow imports; the callers
(exit hooks, DispatchFlow) hand in the objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Lines Metaflow itself appends to a failed task's stderr; the task's own reason comes before.
RUNTIME_LINES = ("Task failed.",)
NO_ERROR_OUTPUT = "(no error output)"


@dataclass(frozen=True)
class RunOutcome:
    flow: str
    pathspec: str
    succeeded: bool
    headline: str = ""
    summary: dict[str, Any] | None = None
    failed_step: str = ""
    error: str = ""  # the first line of the failing task's own error

    @property
    def status(self) -> str:
        return "succeeded" if self.succeeded else "failed"

    @property
    def estimated_usd(self) -> float | None:
        value = (self.summary or {}).get("estimated_usd")
        return float(value) if value is not None else None


def outcome_of(run: Any) -> RunOutcome:
    """The outcome of ``run``: on success its ``headline``/``summary`` artifacts (from the end
    step), on failure the first failing task's step and error line."""
    flow, pathspec = run.pathspec.split("/")[0], run.pathspec
    if run.successful:
        data = run.data
        return RunOutcome(
            flow,
            pathspec,
            True,
            headline=str(data.headline) if "headline" in data else "",
            summary=dict(data.summary) if "summary" in data and data.summary else None,
        )
    for step in run:
        for task in step:
            if not task.successful:
                return RunOutcome(flow, pathspec, False, failed_step=step.id, error=task_error_line(task))
    return RunOutcome(flow, pathspec, False, error="the run did not finish (stopped before any task failed)")


def task_error_line(task: Any) -> str:
    """``Type: first line of the message`` of the exception a task raised; for a task that died
    without one (killed, out of memory), the last line it wrote to stderr."""
    wrapped = task.exception
    if wrapped is not None:
        kind = str(wrapped.type).rsplit(".", 1)[-1]
        message = str(wrapped.exception).strip().splitlines()
        return f"{kind}: {message[0]}" if message else kind
    return last_error_line(task.stderr)


def last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and line.strip() not in RUNTIME_LINES]
    return lines[-1] if lines else NO_ERROR_OUTPUT
