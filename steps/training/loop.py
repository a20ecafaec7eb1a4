"""The training loop of one rank: checkpoints on a timer and at epoch ends, resumes from the newest.

Every rank runs this loop in lock step. Decisions that must be the same everywhere are shared
each step: stop when any rank has seen a spot notice (in a gang, any node's), checkpoint when rank
0's timer says so. Rank 0 alone writes checkpoints and emits events; a barrier follows each write
(every rank waits for rank 0's word that the checkpoint is committed), and every rank restores
from the checkpoint rank 0 chose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import torch

from steps.errors import SpotInterruption
from steps.training.checkpoints import Checkpoint, CheckpointStore, load_resume_from
from steps.training.collective import Group, Solo
from steps.training.config import TrainConfig
from steps.training.data import Dataset
from steps.training.events import (
    BatchDone,
    CheckpointWritten,
    EpochDone,
    Resumed,
    TrainingCallback,
    TrainingEvent,
    TrainingStarted,
)
from steps.training.trainer import Trainer


class StopSignal(Protocol):
    """Set when the instance is going away (a threading or multiprocessing Event)."""

    def is_set(self) -> bool: ...


@dataclass
class FitResult:
    state_dict: dict[str, torch.Tensor]
    history: dict[str, list[float]]
    confusion: list[list[int]]
    device: str
    world_size: int
    resumed_from: str
    last_checkpoint: str
    checkpoints_written: int
    seconds: float


def resume_point(cfg: TrainConfig, store: CheckpointStore, group: Group) -> tuple[Checkpoint | None, str]:
    """The checkpoint to continue from and why ("retry" or "resume-from"); rank 0 chooses.

    A retry of this run resumes from its newest complete checkpoint, else ``--resume-from``.
    """
    found: Checkpoint | None = None
    source = ""
    if group.is_writer:
        found = store.latest()
        source = "retry"
        if found is None and cfg.resume_from:
            found, source = load_resume_from(cfg.resume_from), "resume-from"
    uri, source = group.rank0_value((found.uri if found else "", source))
    if found is None and uri:
        found = load_resume_from(uri)
    return found, source


def fit(
    cfg: TrainConfig,
    data: Dataset,
    store: CheckpointStore,
    *,
    group: Group | None = None,
    device: torch.device | None = None,
    stop: StopSignal | None = None,
    on_event: TrainingCallback | None = None,
    nodes: int = 1,
) -> FitResult:
    """Train, checkpointing every ``cfg.checkpoint_every`` seconds and at each epoch end.

    When ``stop`` is set on any rank (a spot interruption notice) every rank stops after the step
    in flight, rank 0 checkpoints, and SpotInterruption is raised so @retry resumes there.
    ``on_event`` receives every event on rank 0; on other ranks only ``Resumed`` and
    ``CheckpointWritten`` (for a log line per node). ``nodes``: instances the ranks run on.
    """
    group = group or Solo()
    started = time.monotonic()

    def emit(event: TrainingEvent) -> None:
        if on_event is not None and (group.is_writer or isinstance(event, Resumed | CheckpointWritten)):
            on_event(event)

    trainer = Trainer(cfg, data, group, device)
    checkpoint, source = resume_point(cfg, store, group)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        emit(Resumed(checkpoint.uri, trainer.step, trainer.epoch, trainer.batch, trainer.per_epoch, source))
    emit(
        TrainingStarted(
            epochs=cfg.epochs,
            batches_per_epoch=trainer.per_epoch,
            batch_size=cfg.batch_size,
            train_images=trainer.sampler.train_images,
            val_images=trainer.sampler.val_images,
            world_size=group.world_size,
            device=trainer.device.type,
            nodes=nodes,
            checkpoint_every_s=cfg.checkpoint_every,
            epoch=trainer.epoch,
            batch=trainer.batch,
            history={name: list(values) for name, values in trainer.history.items()},
        )
    )
    written: list[str] = []
    last_save = loop_started = time.monotonic()
    steps_this_attempt = 0

    def save(reason: str) -> None:
        nonlocal last_save
        state = trainer.state()  # collective: gathers every rank's RNG state
        saved = None
        if group.is_writer:
            began = time.monotonic()
            committed = store.save(trainer.step, state)
            saved = (committed.uri, committed.bytes, time.monotonic() - began, time.time())
        # The barrier after the write: no rank runs ahead (into a collective that would time out
        # while a slow write goes on) before rank 0 says the checkpoint is committed.
        uri, size, write_s, written_at = group.rank0_value(saved)
        written.append(uri)
        emit(CheckpointWritten(uri, trainer.step, trainer.epoch, trainer.batch, size, write_s, written_at, reason))
        last_save = time.monotonic()

    while trainer.epoch < cfg.epochs:
        order = trainer.sampler.order(trainer.epoch)
        while trainer.batch < trainer.per_epoch:
            loss = trainer.train_batch(order)
            steps_this_attempt += 1
            since_save = time.monotonic() - last_save
            stopping, due = group.any_flags(
                [stop is not None and stop.is_set(), group.is_writer and since_save >= cfg.checkpoint_every]
            )
            emit(
                BatchDone(
                    epoch=trainer.epoch,
                    batch=trainer.batch,
                    batches_per_epoch=trainer.per_epoch,
                    step=trainer.step,
                    loss=loss,
                    images_per_s=steps_this_attempt * cfg.batch_size / (time.monotonic() - loop_started),
                    seconds_to_checkpoint=max(0.0, cfg.checkpoint_every - since_save),
                )
            )
            if stopping:
                save("spot notice")
                where = f"wrote checkpoint {written[-1]}" if written else f"rank {group.rank} stopped with rank 0"
                raise SpotInterruption(f"spot interruption notice: {where}; the retry resumes there")
            # The epoch's last step is saved at the epoch end just below; once is enough.
            if due and trainer.batch < trainer.per_epoch:
                save("timer")
        train_loss, accuracy = trainer.end_epoch()
        emit(EpochDone(trainer.epoch, cfg.epochs, train_loss, accuracy))
        save("epoch end")
    _, confusion = trainer.evaluate()
    last = written[-1] if written else (checkpoint.uri if checkpoint else "")
    return FitResult(
        state_dict={name: value.detach().cpu() for name, value in trainer.model.state_dict().items()},
        history=trainer.history,
        confusion=confusion,
        device=trainer.device.type,
        world_size=group.world_size,
        resumed_from=checkpoint.uri if checkpoint else "",
        last_checkpoint=last,
        checkpoints_written=len(written),
        seconds=time.monotonic() - started,
    )
