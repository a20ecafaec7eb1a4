"""Live cards: progress from steps/ drawn into a running task's realtime Metaflow card.

The work only hands values over (a lock and an assignment). A daemon thread redraws the card, so a
slow refresh — Metaflow renders the card in a subprocess and, after a layout change, waits for it —
never holds up the pipeline. Each refresh costs a process that imports the flow file, so the thread
redraws at the intervals ``steps.refresh`` schedules (5 s at first, growing to 60 s) and only when
the figures moved. Leaving the ``with`` block stops the thread and draws the last values, which
Metaflow renders as the task's final card.

    @card(type="blank", id=SHARD_CARD, refresh_interval=REFRESH_S)
    ...
    with ShardCard(name, current.retry_count) as on_progress:
        preprocess_shard(..., on_progress=on_progress)
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from metaflow import current
from metaflow.cards import Markdown, ProgressBar, Table, ValueBox

from steps.progress import ShardProgress
from steps.refresh import FIRST_S, next_interval

REFRESH_S = int(FIRST_S)  # the cards' refresh_interval: Metaflow drops refreshes closer together than that
SHARD_CARD = "progress"

Value = TypeVar("Value")


def duration(seconds: float | None) -> str:
    """'2 h 05 m', '3 m 07 s', '12 s'; '?' when unknown."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} m"
    return f"{minutes} m {secs:02d} s" if minutes else f"{secs} s"


class LiveCard(Generic[Value]):
    """A realtime card fed with values of one type; subclasses say how to fold and draw them."""

    def __init__(self, card_id: str) -> None:
        self.card = current.card[card_id]
        self.failure = ""
        self._lock = threading.Lock()
        self._changed = False
        self._drawn: object = None  # the figures of the last redraw (``figures``)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._redraw_until_stopped, name=f"live-card-{card_id}", daemon=True)

    def absorb(self, value: Value) -> None:
        """Fold a value into the card's state (called with the lock held: keep it cheap)."""
        raise NotImplementedError

    def draw(self) -> None:
        """Bring the card's components up to date with the state (in the card thread)."""
        raise NotImplementedError

    def figures(self) -> object:
        """What the card shows, comparable: a redraw is skipped when it did not change (called with the
        lock held). None: always redraw."""
        return None

    def expected_seconds(self) -> float | None:
        """How long the task is expected to run in all, once known: longer tasks redraw less often."""
        return None

    def failed(self, error: BaseException) -> None:
        """Note that this attempt failed, for ``draw`` to say so (the last refresh stays visible)."""
        self.failure = f"{error.__class__.__name__}: {error}" if str(error) else error.__class__.__name__

    def __call__(self, value: Value) -> None:
        with self._lock:
            self.absorb(value)
            self._changed = True

    def __enter__(self) -> LiveCard[Value]:
        self._thread.start()
        return self

    def __exit__(self, kind, error, trace) -> None:
        with self._lock:
            if error is not None:
                self.failed(error)
                self._changed = True
        self._stop.set()
        self._thread.join()
        with self._lock:
            self.draw()  # what Metaflow renders as the final card

    def _redraw_until_stopped(self) -> None:
        """Refreshes happen only here, so a failing one ends this thread, never the work."""
        interval = next_interval(None)
        while not self._stop.wait(interval):
            self._redraw()
            with self._lock:
                interval = next_interval(interval, self.expected_seconds())
        # Metaflow renders no final card for a failed task: show the failure in the live one
        # (dropped if the last refresh was under REFRESH_S ago). A task that succeeds gets its final
        # card from Metaflow: one more refresh here would be a process for nothing.
        if self.failure:
            self._redraw()

    def _redraw(self) -> None:
        with self._lock:
            figures = self.figures()
            if not self._changed or (figures is not None and figures == self._drawn):
                return
            self._changed, self._drawn = False, figures
            self.draw()
        self.card.refresh()


class ShardCard(LiveCard[ShardProgress]):
    """A shard task's card: progress bar, images/s, ETA, chunks, rejects by reason, earlier attempts."""

    def __init__(self, shard: str, attempt: int, card_id: str = SHARD_CARD) -> None:
        super().__init__(card_id)
        self.shard, self.attempt = shard, attempt
        self.latest: ShardProgress | None = None
        self.title = Markdown(f"# Shard {shard}\n\nattempt {attempt}: reading what is already committed…")
        self.card.append(self.title)
        self.bar: ProgressBar | None = None

    def absorb(self, value: ShardProgress) -> None:
        self.latest = value

    def figures(self) -> object:
        now = self.latest
        if now is None:
            return None
        return (now.done, now.committed_chunks, now.rejected, now.finished, now.complete_earlier, self.failure)

    def expected_seconds(self) -> float | None:
        now = self.latest
        eta = None if now is None else now.eta_seconds
        return None if eta is None else now.seconds + eta

    def _build(self, first: ShardProgress) -> None:
        """The layout, once the shard's size is known: changing it later would re-render the page."""
        self.bar = ProgressBar(max=max(1, first.images), label="images", unit="images")
        self.rate = ValueBox(title="images/s", value="…")
        self.eta = ValueBox(title="ETA", value="…")
        self.chunks = ValueBox(title="chunks committed", value="…")
        self.rejected = ValueBox(title="rejected so far", value="…")
        self.earlier = Markdown("")
        self.reasons = Markdown("")
        for component in (
            self.bar,
            Table([[self.rate, self.eta, self.chunks, self.rejected]]),
            self.earlier,
            self.reasons,
        ):
            self.card.append(component)

    def draw(self) -> None:
        now = self.latest
        if now is None:
            return
        if self.bar is None:
            self._build(now)
        self.title.update(f"# Shard {self.shard}\n\n{self._status(now)}")
        eta = duration(now.eta_seconds)
        self.bar.update(now.done, f"{now.done}/{now.images} images · {now.images_per_second:.1f} images/s · ETA {eta}")
        self.rate.update(value=f"{now.images_per_second:.1f}", subtitle=f"over {duration(now.seconds)}")
        self.eta.update(value="done" if now.finished else eta)
        self.chunks.update(
            value=f"{now.committed_chunks}/{now.chunks}",
            subtitle=f"{now.reused_chunks} reused" if now.reused_chunks else "none reused",
        )
        self.rejected.update(
            value=now.rejected, theme="warning" if now.rejected else "default", subtitle="bad inputs, reported"
        )
        self.earlier.update(self._earlier(now))
        self.reasons.update(
            "\n".join(["| reject reason | images |", "|---|---|", *(f"| {r} | {n} |" for r, n in now.rejects)])
            if now.rejects
            else "_no rejects so far_"
        )

    def _status(self, now: ShardProgress) -> str:
        attempt = f"attempt {self.attempt}"
        if self.failure:
            return f"{attempt} **failed** at {now.done}/{now.images} images: {self.failure}"
        if now.complete_earlier:
            return f"{attempt}: complete in an earlier run (manifest exists), nothing to do"
        if now.finished:
            return f"{attempt}: **finished** {now.images} images in {duration(now.seconds)}"
        return f"{attempt}: running, {now.done}/{now.images} images"

    def _earlier(self, now: ShardProgress) -> str:
        if not now.reused_chunks:
            return "_nothing was committed before this attempt_" if not now.complete_earlier else ""
        by = "an earlier attempt of this run (or an earlier run)" if self.attempt else "an earlier run into this output"
        return (
            f"**Resumed:** {now.reused_chunks} of {now.chunks} chunks ({now.reused_images} images) were committed "
            f"by {by} and are reused, not redone."
        )
