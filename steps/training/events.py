"""What training reports while it runs: typed events, handed to plain callbacks.

The trainer (rank 0 when there are several) emits one event per occasion; a consumer is any
``Callable[[TrainingEvent], None]``: the task log (``log_event``), a live card in the flow
layer, a test. Events are small frozen dataclasses of numbers and strings, so they pickle
across the pipe from rank 0 to the task process. ``BatchDone`` comes once per optimizer step:
consumers that redraw something should throttle themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from steps.progress import log


@dataclass(frozen=True)
class TrainingStarted:
    """This attempt begins; ``history`` holds the epochs already done when it resumes."""

    epochs: int
    batches_per_epoch: int
    batch_size: int  # global: split across the ranks
    train_images: int
    val_images: int
    world_size: int
    device: str
    checkpoint_every_s: float
    epoch: int  # 0-based position this attempt starts from
    batch: int
    history: dict[str, list[float]]
    nodes: int = 1  # instances the world_size ranks run on (a @parallel gang when > 1)

    @property
    def layout(self) -> str:
        """Where the ranks run, for people: the rank count and device, and the node count of a gang."""
        per_node = f"{self.world_size // self.nodes} × {self.device}"
        return f"{self.nodes} nodes × {per_node}" if self.nodes > 1 else per_node


@dataclass(frozen=True)
class Resumed:
    """Training continues from a checkpoint: a retry of this run, or ``--resume-from``."""

    uri: str
    step: int
    epoch: int  # 0-based, the epoch in progress
    batch: int
    batches_per_epoch: int
    source: str  # "retry" or "resume-from"


@dataclass(frozen=True)
class BatchDone:
    """One optimizer step finished."""

    epoch: int  # 0-based
    batch: int  # batches done in this epoch (1 after the first)
    batches_per_epoch: int
    step: int  # optimizer steps since the run began, across attempts
    loss: float  # mean over the global batch
    images_per_s: float  # this attempt, all ranks together
    seconds_to_checkpoint: float  # until the timer's next one; an epoch end may come sooner


@dataclass(frozen=True)
class EpochDone:
    epoch: int  # 1-based: epochs completed
    epochs: int
    train_loss: float
    val_accuracy: float


@dataclass(frozen=True)
class CheckpointWritten:
    uri: str
    step: int
    epoch: int  # 0-based position saved: the next batch to train
    batch: int
    bytes: int
    write_s: float
    written_at: float  # Unix time
    reason: str  # "timer", "epoch end" or "spot notice"


TrainingEvent = TrainingStarted | Resumed | BatchDone | EpochDone | CheckpointWritten
TrainingCallback = Callable[[TrainingEvent], None]


def log_event(event: TrainingEvent) -> None:
    """The task log's view: a line per resume, checkpoint and epoch (not per batch)."""
    if isinstance(event, Resumed):
        log(
            f"resuming from {event.uri} ({event.source}): step {event.step}, epoch {event.epoch + 1}, "
            f"batch {event.batch}/{event.batches_per_epoch}"
        )
    elif isinstance(event, CheckpointWritten):
        log(
            f"checkpoint written ({event.reason}): {event.uri}, step {event.step}, resumes at epoch "
            f"{event.epoch + 1} batch {event.batch}, {event.bytes / 1e6:.2f} MB in {event.write_s:.2f} s"
        )
    elif isinstance(event, EpochDone):
        log(
            f"epoch {event.epoch}/{event.epochs}: train_loss {event.train_loss:.4f}, "
            f"val_accuracy {event.val_accuracy:.3f}"
        )
    elif isinstance(event, TrainingStarted) and event.world_size > 1:
        where = f" ({event.layout})" if event.nodes > 1 else ""
        log(
            f"{event.world_size} data-parallel ranks on {event.device}{where}, "
            f"{event.batch_size} images per global batch"
        )


def fan_out(*callbacks: TrainingCallback | None) -> TrainingCallback:
    """One callback that calls each given one in order (None entries are skipped)."""
    chosen = [callback for callback in callbacks if callback is not None]

    def emit(event: TrainingEvent) -> None:
        for callback in chosen:
            callback(event)

    return emit
