"""The training loop: checkpoints on a timer, resumes from the newest intact one.
"""

from __future__ import annotations

import io
import pickle
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from steps.errors import ConfigError, SpotInterruption, not_tensors
from steps.io.storage import open_storage
from steps.models.architectures import build_architecture
from steps.progress import log
from steps.training.checkpoints import Checkpoint, CheckpointStore, load_resume_from
from steps.training.config import TrainConfig
from steps.training.data import Dataset, normalize
from steps.training.determinism import (
    augment,
    epoch_order,
    make_deterministic,
    restore_rng_state,
    rng_state,
    split_indices,
)


def load_initial_weights(model: nn.Module, path: str) -> None:
    """Load a state dict or TrainFlow bundle; tensors whose shape differs (a new head) stay random."""
    # Read through storage: on Batch/Kubernetes a laptop path does not exist, an s3:// URI does.
    parent, _, name = path.rpartition("/")
    try:
        payload = torch.load(io.BytesIO(open_storage(parent or ".").read(name)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise not_tensors("--initial-weights", path) from err
    weights = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(weights, dict):
        raise ConfigError(
            "--initial-weights",
            path,
            "a state dict or TrainFlow model bundle",
            "save with torch.save(model.state_dict())",
        )
    own = model.state_dict()
    usable = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(
            "--initial-weights", path, "weights for this architecture", "pass weights of the same --architecture"
        )
    model.load_state_dict(usable, strict=False)
    log(f"initial weights: {len(usable)}/{len(own)} tensors from {path}")


@dataclass
class FitResult:
    state_dict: dict[str, torch.Tensor]
    history: dict[str, list[float]]
    confusion: list[list[int]]
    device: str
    resumed_from: str
    last_checkpoint: str
    checkpoints_written: int
    seconds: float


def evaluate(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, classes: int, batch_size: int
) -> tuple[float, list[list[int]]]:
    """Accuracy and confusion matrix (rows true, columns predicted) on held-out images."""
    device = next(model.parameters()).device
    model.eval()
    confusion = torch.zeros(classes, classes, dtype=torch.int64)
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        for start in range(0, len(targets), batch_size):
            predicted = model(normalize(images[start : start + batch_size].to(device))).argmax(1).cpu()
            for true, pred in zip(targets[start : start + batch_size].tolist(), predicted.tolist(), strict=True):
                confusion[true, pred] += 1
    model.train()
    return confusion.trace().item() / max(1, len(targets)), confusion.tolist()


class Trainer:
    """One training run's state: model, optimizer, schedule, RNGs and the data-order position.

    The position is (epoch, batch): the next batch to train. Everything a checkpoint holds is
    here, so ``state()``/``restore()`` round-trip exactly.
    """

    def __init__(self, cfg: TrainConfig, data: Dataset) -> None:
        self.cfg = cfg
        self.data = data
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        make_deterministic(self.device)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        model = build_architecture(cfg.architecture, len(data.class_names))
        if cfg.initial_weights:
            load_initial_weights(model, cfg.initial_weights)
        self.model = model.to(self.device)
        self.train_ids, self.val_ids = split_indices(data.targets, cfg.val_fraction, cfg.seed)
        # Full batches only: BatchNorm cannot train on a batch of one.
        self.per_epoch = max(1, len(self.train_ids) // cfg.batch_size)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs * self.per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda")
        self.loss_fn = nn.CrossEntropyLoss()
        self.history: dict[str, list[float]] = {"train_loss": [], "val_accuracy": []}
        self.epoch, self.batch, self.step, self.loss_sum = 0, 0, 0, 0.0

    def state(self) -> dict[str, Any]:
        return {
            "architecture": self.cfg.architecture,
            "class_names": self.data.class_names,
            "image_size": self.cfg.image_size,
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "loss_sum": self.loss_sum,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }

    def restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.state
        mine = (self.cfg.architecture, self.data.class_names, self.cfg.image_size)
        theirs = (state["architecture"], state["class_names"], state["image_size"])
        if mine != theirs:
            raise ConfigError(
                "checkpoint",
                checkpoint.uri,
                f"architecture, classes, image size {mine}",
                f"it has {theirs}; resume with matching settings",
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.epoch, self.batch, self.step, self.loss_sum = (
            state["epoch"],
            state["batch"],
            state["step"],
            state["loss_sum"],
        )
        self.history = {name: list(values) for name, values in state["history"].items()}

    def train_batch(self, order: torch.Tensor) -> None:
        cfg = self.cfg
        ids = order[self.batch * cfg.batch_size : (self.batch + 1) * cfg.batch_size]
        inputs = normalize(augment(self.data.images[ids], cfg.seed, self.epoch, ids.tolist()).to(self.device))
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            loss = self.loss_fn(self.model(inputs), self.data.targets[ids].to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.loss_sum += loss.item()
        self.batch, self.step = self.batch + 1, self.step + 1

    def evaluate(self) -> tuple[float, list[list[int]]]:
        return evaluate(
            self.model,
            self.data.images[self.val_ids],
            self.data.targets[self.val_ids],
            len(self.data.class_names),
            self.cfg.batch_size,
        )

    def end_epoch(self) -> None:
        accuracy, _ = self.evaluate()
        train_loss = self.loss_sum / self.per_epoch
        self.history["train_loss"].append(train_loss)
        self.history["val_accuracy"].append(accuracy)
        log(f"epoch {self.epoch + 1}/{self.cfg.epochs}: train_loss {train_loss:.4f}, val_accuracy {accuracy:.3f}")
        self.epoch, self.batch, self.loss_sum = self.epoch + 1, 0, 0.0


def fit(
    cfg: TrainConfig,
    data: Dataset,
    store: CheckpointStore,
    *,
    stop: threading.Event | None = None,
    after_batch: Callable[[int], None] | None = None,
) -> FitResult:
    """Train, checkpointing every ``cfg.checkpoint_every`` seconds and at each epoch end.

    Resumes from the newest complete checkpoint in ``store`` (a retry of this run), else from
    ``cfg.resume_from``. When ``stop`` is set (a spot interruption notice) it checkpoints at once
    and raises SpotInterruption, so the task exits non-zero and @retry resumes it.
    """
    started = time.monotonic()
    trainer = Trainer(cfg, data)
    checkpoint = store.latest()
    if checkpoint is None and cfg.resume_from:
        checkpoint = load_resume_from(cfg.resume_from)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        log(f"resuming from {checkpoint.uri}: epoch {trainer.epoch + 1}, batch {trainer.batch}/{trainer.per_epoch}")
    written: list[str] = []
    last_save = time.monotonic()
    batches_this_attempt = 0
    while trainer.epoch < cfg.epochs:
        order = trainer.train_ids[epoch_order(cfg.seed, trainer.epoch, len(trainer.train_ids))]
        while trainer.batch < trainer.per_epoch:
            trainer.train_batch(order)
            batches_this_attempt += 1
            if stop is not None and stop.is_set():
                written.append(store.save(trainer.step, trainer.state()))
                raise SpotInterruption(
                    f"spot interruption notice: wrote checkpoint {written[-1]}; the retry resumes there"
                )
            if time.monotonic() - last_save >= cfg.checkpoint_every:
                written.append(store.save(trainer.step, trainer.state()))
                last_save = time.monotonic()
            if after_batch is not None:
                after_batch(batches_this_attempt)
        trainer.end_epoch()
        written.append(store.save(trainer.step, trainer.state()))
        last_save = time.monotonic()
    _, confusion = trainer.evaluate()
    last = written[-1] if written else (checkpoint.uri if checkpoint else "")
    return FitResult(
        state_dict={name: value.detach().cpu() for name, value in trainer.model.state_dict().items()},
        history=trainer.history,
        confusion=confusion,
        device=trainer.device.type,
        resumed_from=checkpoint.uri if checkpoint else "",
        last_checkpoint=last,
        checkpoints_written=len(written),
        seconds=time.monotonic() - started,
    )
