"""Progress of long work: task log lines, and typed snapshots for live views (no Metaflow here).

A shard's chunk loop counts into ``Progress``: images as they finish, chunks as they are
committed (with the reject reasons of their rows), chunks reused from an earlier attempt or run.
It logs a line every ~30 s and hands a ``ShardProgress`` snapshot to ``on_update`` at most every
``update_interval_s`` and once at the end; the flow layer renders those into a live card.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Snapshots are cheap, but a live view needs no more than one every few seconds.
UPDATE_INTERVAL_S = 2.0
LOG_INTERVAL_S = 30.0
MAX_REASON_KINDS = 8  # distinct reject reasons shown; the rest count as "other"
OTHER_REASONS = "other"


def log(message: str) -> None:
    print(f"[spot-batch] {message}", file=sys.stdout, flush=True)


def reason_kind(reason: str) -> str:
    """A reject reason without its details (sizes, names, errors), so rejects can be counted by kind.

    "not a recognised image format (31 bytes)" → "not a recognised image format";
    "output name resized/a.jpg is taken by a.png; rename…" → "output name is taken by".
    """
    head = re.split(r"[(:;]", reason, maxsplit=1)[0]
    words = [word for word in head.split() if "/" not in word and "." not in word]
    return " ".join(words) or reason.strip() or "unknown"


@dataclass(frozen=True)
class ShardProgress:
    """Where one shard stands, as a live view shows it."""

    shard: str
    images: int  # in the shard
    done: int  # images finished, reused ones included
    seconds: float  # this attempt so far
    chunks: int
    committed_chunks: int  # reused ones included
    reused_chunks: int  # committed by an earlier attempt or run, not redone
    reused_images: int
    rejects: tuple[tuple[str, int], ...] = ()  # (reason kind, count) in committed chunks, most first
    finished: bool = False
    complete_earlier: bool = False  # the whole shard was done by an earlier run: nothing to do

    @property
    def images_per_second(self) -> float:
        """This attempt's own rate (reused images took no time now)."""
        worked = self.done - self.reused_images
        return worked / self.seconds if self.seconds > 0 and worked > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.finished:
            return 0.0
        rate = self.images_per_second
        return (self.images - self.done) / rate if rate > 0 else None

    @property
    def rejected(self) -> int:
        return sum(count for _, count in self.rejects)


ProgressCallback = Callable[[ShardProgress], None]


class Progress:
    """Counts one shard's work (from the single thread that runs its chunk loop).

    ``advance`` is called per image or per batch, so it does no more than add and read the
    clock unless a log line or a snapshot is due.
    """

    def __init__(
        self,
        shard: str,
        images: int,
        chunks: int = 0,
        on_update: ProgressCallback | None = None,
        *,
        update_interval_s: float = UPDATE_INTERVAL_S,
        log_interval_s: float = LOG_INTERVAL_S,
    ) -> None:
        self.shard = shard
        self.total = images
        self.chunks = chunks
        self.on_update = on_update
        self.update_interval_s = update_interval_s
        self.log_interval_s = log_interval_s
        self.done = 0
        self.committed_chunks = 0
        self.reused_chunks = 0
        self.reused_images = 0
        self.rejects: Counter[str] = Counter()
        self.started = time.monotonic()
        self._last_log = self._last_update = self.started

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def rate(self) -> float:
        worked = self.done - self.reused_images
        return worked / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def reused(self, images: int, reasons: Iterable[str]) -> None:
        """A chunk an earlier attempt or run committed, taken as it is."""
        self.reused_chunks += 1
        self.reused_images += images
        self.done += images
        self._count_commit(reasons)

    def committed(self, reasons: Iterable[str]) -> None:
        """A chunk this attempt committed; ``reasons`` are its rejected rows' reasons."""
        self._count_commit(reasons)
        self._maybe_report(time.monotonic())

    def advance(self, count: int = 1) -> None:
        self.done += count
        self._maybe_report(time.monotonic())

    def snapshot(self, finished: bool = False, complete_earlier: bool = False) -> ShardProgress:
        return ShardProgress(
            shard=self.shard,
            images=self.total,
            done=self.done,
            seconds=self.elapsed_s,
            chunks=self.chunks,
            committed_chunks=self.committed_chunks,
            reused_chunks=self.reused_chunks,
            reused_images=self.reused_images,
            rejects=self._reject_kinds(),
            finished=finished,
            complete_earlier=complete_earlier,
        )

    def update_now(self) -> None:
        """Hand a snapshot to ``on_update`` now (e.g. once resuming is known), not waiting for the timer."""
        self._last_update = time.monotonic()
        if self.on_update is not None:
            self.on_update(self.snapshot())

    def finish(self, extra: str = "") -> None:
        suffix = f", {extra}" if extra else ""
        log(
            f"shard {self.shard}: finished {self.done}/{self.total} images in {self.elapsed_s:.1f} s "
            f"({self.rate():.1f} images/s){suffix}"
        )
        if self.on_update is not None:
            self.on_update(self.snapshot(finished=True))

    def complete_earlier(self) -> None:
        """The whole shard was done by an earlier run (its manifest exists): nothing to do now."""
        self.done = self.reused_images = self.total
        if self.on_update is not None:
            self.on_update(self.snapshot(finished=True, complete_earlier=True))

    def _count_commit(self, reasons: Iterable[str]) -> None:
        self.committed_chunks += 1
        self.rejects.update(reason_kind(reason) for reason in reasons)

    def _reject_kinds(self) -> tuple[tuple[str, int], ...]:
        ranked = self.rejects.most_common()
        shown, rest = ranked[:MAX_REASON_KINDS], ranked[MAX_REASON_KINDS:]
        if rest:
            shown.append((OTHER_REASONS, sum(count for _, count in rest)))
        return tuple(shown)

    def _maybe_report(self, now: float) -> None:
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            log(f"shard {self.shard}: {self.done}/{self.total} images, {self.rate():.1f} images/s")
        if self.on_update is not None and now - self._last_update >= self.update_interval_s:
            self._last_update = now
            self.on_update(self.snapshot())
