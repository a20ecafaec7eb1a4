"""The train step's live card: per-epoch curves, the epoch in progress, checkpoints.

Fed with ``steps.training.events`` (rank 0's, whatever the number of ranks) and drawn by the
live-card thread (``live_card.LiveCard``), so training never waits for the card.

    @card(type="blank", id=TRAIN_CARD, refresh_interval=REFRESH_S)
    ...
    with TrainCard(current.retry_count) as on_event:
        train_run(..., on_event=on_event)
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

from live_card import LiveCard, duration
from metaflow.cards import Markdown, ProgressBar, Table, ValueBox, VegaChart

from steps.training.events import (
    BatchDone,
    CheckpointWritten,
    EpochDone,
    Resumed,
    TrainingEvent,
    TrainingStarted,
)
from steps.training.report import curves_spec

TRAIN_CARD = "progress"
CHECKPOINTS_SHOWN = 12  # the newest; the count covers them all


class TrainCard(LiveCard[TrainingEvent]):
    def __init__(self, attempt: int, card_id: str = TRAIN_CARD) -> None:
        super().__init__(card_id)
        self.attempt = attempt
        self.started: TrainingStarted | None = None
        self.resumed: Resumed | None = None
        self.batch: BatchDone | None = None
        self.history: dict[str, list[float]] = {"train_loss": [], "val_accuracy": []}
        self.checkpoints: deque[CheckpointWritten] = deque(maxlen=CHECKPOINTS_SHOWN)
        self.checkpoints_written = 0
        self.title = Markdown(f"# Training\n\nattempt {attempt}: loading the data…")
        self.card.append(self.title)
        self.epoch_bar: ProgressBar | None = None

    def absorb(self, value: TrainingEvent) -> None:
        if isinstance(value, TrainingStarted):
            self.started = value
            self.history = {name: list(values) for name, values in value.history.items()}
        elif isinstance(value, Resumed):
            self.resumed = value
        elif isinstance(value, BatchDone):
            self.batch = value
        elif isinstance(value, EpochDone):
            self.history["train_loss"].append(value.train_loss)
            self.history["val_accuracy"].append(value.val_accuracy)
        elif isinstance(value, CheckpointWritten):
            self.checkpoints.append(value)
            self.checkpoints_written += 1

    def _build(self, started: TrainingStarted) -> None:
        self.epochs_bar = ProgressBar(max=started.epochs, label="epochs", unit="epochs", value=started.epoch)
        self.epoch_bar = ProgressBar(max=started.batches_per_epoch, label="batches in this epoch", unit="batches")
        self.rate = ValueBox(title="images/s", value="…")
        self.next_checkpoint = ValueBox(title="next checkpoint in", value="…")
        self.loss = ValueBox(title="batch loss", value="…")
        self.accuracy = ValueBox(title="val accuracy", value="…")
        self.curves = VegaChart(curves_spec(self.history))
        self.epochs_table = Markdown("")
        self.checkpoint_table = Markdown("")
        for component in (
            self.epochs_bar,
            self.epoch_bar,
            Table([[self.rate, self.next_checkpoint, self.loss, self.accuracy]]),
            Markdown("## Loss and accuracy per epoch"),
            self.curves,
            self.epochs_table,
            Markdown("## Checkpoints"),
            self.checkpoint_table,
        ):
            self.card.append(component)

    def draw(self) -> None:
        started = self.started
        if started is None:
            if self.failure:
                self.title.update(f"# Training\n\nattempt {self.attempt} **failed**: {self.failure}")
            return
        if self.epoch_bar is None:
            self._build(started)
        done = len(self.history["train_loss"])
        self.title.update(f"# Training\n\n{self._status(started, done)}")
        self.epochs_bar.update(done, f"{done}/{started.epochs} epochs")
        batch = self.batch
        if batch is not None:
            in_epoch = batch.batch if batch.epoch == done else 0  # 0 once the epoch ended
            self.epoch_bar.update(
                in_epoch, f"epoch {min(done + 1, started.epochs)}: batch {in_epoch}/{batch.batches_per_epoch}"
            )
            self.rate.update(value=f"{batch.images_per_s:.1f}", subtitle=started.layout)
            self.next_checkpoint.update(
                value=duration(batch.seconds_to_checkpoint), subtitle="or at the epoch end if sooner"
            )
            self.loss.update(value=f"{batch.loss:.4f}", subtitle=f"step {batch.step}")
        if done:
            self.accuracy.update(value=f"{self.history['val_accuracy'][-1]:.3f}", subtitle=f"after epoch {done}")
        self.curves.update(curves_spec(self.history))
        self.epochs_table.update(
            "\n".join(
                [
                    "| epoch | train loss | val accuracy |",
                    "|---|---|---|",
                    *(
                        f"| {i} | {loss:.4f} | {accuracy:.3f} |"
                        for i, (loss, accuracy) in enumerate(
                            zip(self.history["train_loss"], self.history["val_accuracy"], strict=True), start=1
                        )
                    ),
                ]
            )
        )
        self.checkpoint_table.update(self._checkpoints())

    def _status(self, started: TrainingStarted, done: int) -> str:
        attempt = f"attempt {self.attempt}"
        resumed = ""
        if self.resumed is not None:
            r = self.resumed
            resumed = (
                f"\n\n**Resumed** ({r.source}) from `{r.uri}`: step {r.step}, epoch {r.epoch + 1}, "
                f"batch {r.batch}/{r.batches_per_epoch}"
            )
        if self.failure:
            return f"{attempt} **failed** after {done}/{started.epochs} epochs: {self.failure}{resumed}"
        if done >= started.epochs:
            return f"{attempt}: **finished** {started.epochs} epochs{resumed}"
        return (
            f"{attempt}: epoch {done + 1}/{started.epochs} on {started.train_images} images ({started.layout}){resumed}"
        )

    def _checkpoints(self) -> str:
        if not self.checkpoints:
            return "_none written by this attempt yet_"
        rows = [
            f"| {c.step} | {datetime.fromtimestamp(c.written_at, UTC):%H:%M:%S} UTC | "
            f"{c.bytes / 1e6:.2f} MB | {c.write_s:.2f} s | {c.reason} | `{c.uri}` |"
            for c in reversed(self.checkpoints)
        ]
        return "\n".join(
            [
                f"{self.checkpoints_written} written by this attempt, newest first:",
                "",
                "| step | written | size | took | reason | where |",
                "|---|---|---|---|---|---|",
                *rows,
            ]
        )
