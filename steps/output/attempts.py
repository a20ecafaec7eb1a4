"""Every attempt of a shard task, killed ones included: what the run's instances billed.

A SIGKILLed attempt (a spot loss) leaves no Metaflow artifacts, so each attempt writes one small
start record to the output location (``steps.output.layout.attempt_key``) before it does any work. The
attempt that succeeds reads the records of the earlier attempts of this run and times them: an
attempt lasted until the next one started. That is an upper bound (it includes the wait before
the retry, 0 minutes in config/*.toml, and on AWS Batch the new job's queue time) — a bill is
better over than under. An attempt killed before its record was written is absorbed into the
one before it; with no record at all, only the final attempt is counted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from steps.io.storage import Storage
from steps.output.layout import attempt_key


@dataclass(frozen=True)
class AttemptClock:
    """The start of one attempt of one shard task of one run."""

    run_id: str
    shard: str
    attempt: int  # Metaflow's retry count: 0 for the first attempt
    started_at: float


def start_attempt(storage: Storage, run_id: str, shard: str, attempt: int) -> AttemptClock:
    """Record that ``attempt`` of ``shard`` started now; call before any work."""
    clock = AttemptClock(run_id, shard, attempt, time.time())
    record = {"attempt": attempt, "started_at": clock.started_at}
    storage.write(attempt_key(run_id, shard, attempt), json.dumps(record).encode())
    return clock


def attempt_seconds(storage: Storage, clock: AttemptClock, finished_at: float | None = None) -> tuple[float, ...]:
    """Seconds of each attempt of this shard in this run, oldest first, the current one (ending
    ``finished_at``, default now) last."""
    starts = []
    for attempt in range(clock.attempt):
        key = attempt_key(clock.run_id, clock.shard, attempt)
        if storage.exists(key):
            starts.append(float(json.loads(storage.read(key))["started_at"]))
    starts = sorted(s for s in starts if s < clock.started_at)
    ends = [*starts[1:], clock.started_at][: len(starts)]
    current = (finished_at if finished_at is not None else time.time()) - clock.started_at
    return (*(end - start for start, end in zip(starts, ends, strict=True)), current)
