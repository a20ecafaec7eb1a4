"""A live card's redraws: a task that succeeds leaves its last figures to Metaflow's final card (a
refresh there would be one more `card create` process for nothing); a failed one shows the failure."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from steps.progress import ShardProgress
from tests.support.flows import REPO

sys.path.insert(0, str(REPO / "flows"))
import live_card  # a flow-side module: flows/ is the flow files' import root


class RecordingCard(list):
    """What ``current.card[id]`` gives a step: components appended, refreshes counted."""

    refreshes = 0

    def refresh(self) -> None:
        self.refreshes += 1


@pytest.fixture
def card(monkeypatch: pytest.MonkeyPatch) -> RecordingCard:
    recording = RecordingCard()
    monkeypatch.setattr(live_card, "current", SimpleNamespace(card={live_card.SHARD_CARD: recording}))
    return recording


def progress(done: int, finished: bool = False) -> ShardProgress:
    return ShardProgress(
        shard="00-7f",
        images=10,
        done=done,
        seconds=1.0,
        chunks=2,
        committed_chunks=done // 5,
        reused_chunks=0,
        reused_images=0,
        finished=finished,
    )


def test_a_task_that_succeeds_refreshes_nothing_on_its_way_out(card: RecordingCard) -> None:
    with live_card.ShardCard("00-7f", attempt=0) as on_progress:
        on_progress(progress(5))
        on_progress(progress(10, finished=True))
    assert card.refreshes == 0
    bars = [c for c in card if isinstance(c, live_card.ProgressBar)]
    assert len(bars) == 1 and "10/10 images" in bars[0].render()["details"]  # drawn for the final card


def test_a_task_that_fails_shows_the_failure_in_one_last_refresh(card: RecordingCard) -> None:
    with pytest.raises(OSError), live_card.ShardCard("00-7f", attempt=1) as on_progress:
        on_progress(progress(5))
        raise OSError("disk full")
    assert card.refreshes == 1
    assert "attempt 1 **failed** at 5/10 images: OSError: disk full" in card[0].render()["source"]
