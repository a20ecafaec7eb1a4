"""Attempt records: a killed attempt lasted until the next one started; the final one until now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.io.storage import open_storage
from steps.output.attempts import AttemptClock, attempt_seconds, start_attempt
from steps.output.layout import attempt_key


def test_earlier_attempts_last_until_the_next_one_started(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    for attempt, started in ((0, 100.0), (1, 130.0)):
        storage.write(attempt_key("7", "3a", attempt), json.dumps({"attempt": attempt, "started_at": started}).encode())
    storage.write(attempt_key("6", "3a", 0), json.dumps({"attempt": 0, "started_at": 1.0}).encode())  # another run
    clock = AttemptClock("7", "3a", 2, 145.0)
    assert attempt_seconds(storage, clock, finished_at=150.0) == (30.0, 15.0, 5.0)


def test_a_missing_record_is_absorbed_and_a_first_attempt_is_alone(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write(attempt_key("7", "x", 0), json.dumps({"attempt": 0, "started_at": 100.0}).encode())
    # Attempt 1 was killed before it wrote its record: attempt 0 is counted until attempt 2 started.
    assert attempt_seconds(storage, AttemptClock("7", "x", 2, 160.0), finished_at=170.0) == (60.0, 10.0)
    clock = start_attempt(storage, "8", "x", 0)
    assert storage.exists(attempt_key("8", "x", 0))
    (only,) = attempt_seconds(storage, clock)
    assert only == pytest.approx(0.0, abs=5.0)
