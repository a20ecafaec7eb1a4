"""When a live card redraws: often at first, then rarely, so the card costs little of the task's CPU.

Metaflow renders every refresh of a realtime card in a new ``python <flow file> card create`` process,
which imports Metaflow and the flow file: ~0.8-1.2 s of CPU each (docs/performance.md). At one refresh
every 5 s that is 15-25% of a core for the whole task, more than the work some tasks report. So the
interval starts at ``FIRST_S`` (the layout and the first figures show up at once), grows by ``GROWTH``
with each redraw, never below a ``REDRAWS_PER_TASK``-th of the task's expected length, and stops
growing at ``LONGEST_S``; a card whose figures did not move is not redrawn at all.
"""

from __future__ import annotations

FIRST_S = 5.0  # also the cards' refresh_interval: Metaflow drops refreshes closer together than that
LONGEST_S = 60.0
GROWTH = 2.0
REDRAWS_PER_TASK = 20


def next_interval(previous: float | None, expected_seconds: float | None = None) -> float:
    """Seconds to wait before the next redraw, after waiting ``previous`` (None before the first) in a
    task expected to run ``expected_seconds`` in all (None when not known yet)."""
    if previous is None:
        return FIRST_S
    wanted = max(previous * GROWTH, (expected_seconds or 0.0) / REDRAWS_PER_TASK)
    return min(max(wanted, FIRST_S), LONGEST_S)


def redraws_within(seconds: float, expected_seconds: float | None = None) -> int:
    """How many redraws ``next_interval`` schedules in the first ``seconds`` of a task."""
    count, elapsed, interval = 0, 0.0, None
    while True:
        interval = next_interval(interval, expected_seconds)
        elapsed += interval
        if elapsed > seconds:
            return count
        count += 1
