"""One training run's state and its steps, for one rank of a data-parallel group (or the only one).

With several ranks each takes its share of every global batch; after the backward pass one
all-reduce sums the gradients (each rank's loss is weighted by its share of the batch, so the
sum is the gradient of the global batch's mean loss), averages the BatchNorm statistics and sums
the loss. All ranks then hold identical weights and buffers after every step. The reduction is
one flat buffer in parameter order, the same layout on every attempt, so a resumed run reduces
exactly as an uninterrupted one (DistributedDataParallel regroups its buckets after the first
step of each process, which would make a retry's first step reduce differently).
"""

from __future__ import annotations

import io
import pickle
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from steps.errors import ConfigError, not_tensors
from steps.io.storage import open_storage
from steps.models.architectures import build_architecture
from steps.progress import log
from steps.training.checkpoints import Checkpoint
from steps.training.collective import Group, Solo
from steps.training.config import TrainConfig
from steps.training.data import Dataset, normalize
from steps.training.determinism import augment, derive_seed, make_deterministic, restore_rng_state, rng_state
from steps.training.sampling import sampler_for


def load_initial_weights(model: nn.Module, path: str) -> int:
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
    return len(usable)


def confusion_matrix(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, classes: int, batch_size: int
) -> torch.Tensor:
    """Counts of (true, predicted) on held-out images: rows true, columns predicted."""
    device = next(model.parameters()).device
    model.eval()
    confusion = torch.zeros(classes, classes, dtype=torch.int64)
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        for start in range(0, len(targets), batch_size):
            predicted = model(normalize(images[start : start + batch_size].to(device))).argmax(1).cpu()
            for true, pred in zip(targets[start : start + batch_size].tolist(), predicted.tolist(), strict=True):
                confusion[true, pred] += 1
    model.train()
    return confusion


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Trainer:
    """One rank's training state: model, optimizer, schedule, RNGs and the data-order position.

    The position is (epoch, batch): the next global batch to train. Everything a checkpoint holds
    is here, so ``state()``/``restore()`` round-trip exactly; both are collective (every rank
    calls them: the checkpoint holds each rank's RNG state).
    """

    def __init__(
        self, cfg: TrainConfig, data: Dataset, group: Group | None = None, device: torch.device | None = None
    ) -> None:
        self.cfg = cfg
        self.data = data
        self.group = group or Solo()
        self.device = device or default_device()
        make_deterministic(self.device)
        # The same seed on every rank: identical initial weights without a broadcast.
        torch.manual_seed(cfg.seed)
        model = build_architecture(cfg.architecture, len(data.class_names))
        if cfg.initial_weights:
            loaded = load_initial_weights(model, cfg.initial_weights)
            if self.group.is_writer:
                log(f"initial weights: {loaded}/{len(model.state_dict())} tensors from {cfg.initial_weights}")
        # Then a stream per rank, so layers like dropout draw differently on each rank.
        rank_seed = derive_seed(cfg.seed, "rank", self.group.rank)
        torch.manual_seed(rank_seed)
        random.seed(rank_seed)
        np.random.seed(rank_seed % 2**32)
        self.model = model.to(self.device)
        self.sampler = sampler_for(cfg, data, self.group)
        self.per_epoch = self.sampler.per_epoch
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
            "rng": self.group.gather(rng_state()),  # one per rank, in rank order
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
        if len(state["rng"]) == self.group.world_size:
            restore_rng_state(state["rng"][self.group.rank])
        elif self.group.is_writer:
            # The position and weights carry over; only the per-rank random streams cannot.
            log(f"checkpoint from {len(state['rng'])} ranks, now {self.group.world_size}: fresh random streams")
        self.epoch, self.batch, self.step, self.loss_sum = (
            state["epoch"],
            state["batch"],
            state["step"],
            state["loss_sum"],
        )
        self.history = {name: list(values) for name, values in state["history"].items()}

    def train_batch(self, order: torch.Tensor) -> float:
        """Train this rank's share of the next global batch; return the global batch's mean loss."""
        cfg = self.cfg
        ids = self.sampler.rank_ids(order, self.batch)
        augmented = augment(self.data.images[ids], cfg.seed, self.epoch, self.sampler.augment_ids(ids))
        inputs = normalize(augmented.to(self.device))
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            share = len(ids) / cfg.batch_size
            loss = self.loss_fn(self.model(inputs), self.data.targets[ids].to(self.device)) * share
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        step_loss = self._reduce(loss.detach())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.loss_sum += step_loss
        self.batch, self.step = self.batch + 1, self.step + 1
        return step_loss

    def _reduce(self, loss: torch.Tensor) -> float:
        """Sum gradients and loss, average float buffers (BatchNorm statistics) across ranks."""
        if self.group.world_size == 1:
            return loss.item()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        buffers = [b for b in self.model.buffers() if b.is_floating_point()]
        flat = torch.cat([t.reshape(-1).float() for t in (*grads, *buffers, loss.reshape(1))])
        self.group.sum_(flat)
        offset = 0
        for tensor, scale in [(g, 1.0) for g in grads] + [(b, 1.0 / self.group.world_size) for b in buffers]:
            tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor) * scale)
            offset += tensor.numel()
        return flat[-1].item()

    def evaluate(self) -> tuple[float, list[list[int]]]:
        """Accuracy and confusion on the validation images; each rank counts its share, summed."""
        mine = self.sampler.val_share()
        confusion = confusion_matrix(
            self.model,
            self.data.images[mine],
            self.data.targets[mine],
            len(self.data.class_names),
            self.cfg.batch_size,
        )
        self.group.sum_(confusion)
        return confusion.trace().item() / max(1, self.sampler.val_images), confusion.tolist()

    def end_epoch(self) -> tuple[float, float]:
        """Record the finished epoch's train loss and validation accuracy; move to the next."""
        accuracy, _ = self.evaluate()
        train_loss = self.loss_sum / self.per_epoch
        self.history["train_loss"].append(train_loss)
        self.history["val_accuracy"].append(accuracy)
        self.epoch, self.batch, self.loss_sum = self.epoch + 1, 0, 0.0
        return train_loss, accuracy
