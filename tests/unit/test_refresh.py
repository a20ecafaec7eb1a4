"""The live cards' redraw schedule: quick at first, then rare enough to cost ≤ 5% of a core."""

from __future__ import annotations

from itertools import pairwise

import pytest

from steps.refresh import FIRST_S, LONGEST_S, next_interval, redraws_within

# CPU of one `card create` process after the flow files got light (docs/performance.md): ~1 s.
REFRESH_CPU_S = 1.0


def test_the_first_redraws_come_quickly_then_the_interval_grows_to_its_cap() -> None:
    intervals = [next_interval(None)]
    for _ in range(12):
        intervals.append(next_interval(intervals[-1]))
    assert intervals[0] == FIRST_S
    assert all(b >= a for a, b in pairwise(intervals))
    assert intervals[-1] == LONGEST_S


def test_a_long_task_starts_with_longer_intervals() -> None:
    assert next_interval(FIRST_S, expected_seconds=3600) == LONGEST_S
    assert next_interval(FIRST_S, expected_seconds=60) == pytest.approx(FIRST_S * 2)


@pytest.mark.parametrize("minutes", [2, 5, 10, 30, 120])
def test_card_refreshes_cost_at_most_5_percent_of_a_core_per_task_minute(minutes: int) -> None:
    for expected in (None, minutes * 60.0):
        cpu = (redraws_within(minutes * 60, expected) + 1) * REFRESH_CPU_S  # +1: the final card
        assert cpu / (minutes * 60) <= 0.05, (minutes, expected)
