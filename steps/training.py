"""Train an image classifier on a labelled set, resumable from checkpoints bit-identically.

Input: a directory or ``s3://`` prefix of images with ``labels.csv`` (header ``key,label``; each key
relative to the input root) at its root, which is what ``python -m steps.sample_data DIR`` writes.

Why a resumed run ends with exactly the weights of an uninterrupted one (on CPU):
- the train/validation split is a pure function of the seed, and an epoch's data order a pure
  function of (seed, epoch), so a checkpoint needs only the position (epoch, batch index);
- augmentation draws from a generator seeded from (seed, epoch, sample index), so it replays
  identically from any batch; the global RNG states are saved anyway, for layers like dropout;
- deterministic algorithms, and images decoded by threads into memory up front: no DataLoader
  worker processes whose RNG and prefetch state would also have to be restored;
- the running loss sum of the epoch in progress is saved, so the epoch's metrics match too.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.nn import functional as F

from steps.checkpoints import Checkpoint, CheckpointStore, load_resume_from
from steps.errors import ConfigError, RejectedInput, SpotInterruption
from steps.imaging import decode
from steps.models import IMAGENET_MEAN, IMAGENET_STD, ModelBundle, build_architecture
from steps.planning import check_input, check_output, check_positive
from steps.progress import log
from steps.report import Chart, Report, Table
from steps.shards import LABELS_FILE
from steps.storage import Storage, is_s3, join_uri, map_bounded, open_storage, read_input


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored by the flow as the ``settings`` artifact."""

    input_uri: str
    output_uri: str
    checkpoint_root: str
    architecture: str = "small_cnn"
    initial_weights: str = ""
    resume_from: str = ""
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float = 0.003
    seed: int = 0
    image_size: int = 64
    val_fraction: float = 0.2
    checkpoint_every: float = 600.0
    keep_last: int = 3
    threads: int = 8

    def check(self) -> None:
        for name, value in (
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
            ("--image-size", self.image_size),
            ("--keep-last", self.keep_last),
            ("--threads", self.threads),
        ):
            check_positive(name, value)
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                "--val-fraction", self.val_fraction, "a fraction between 0 and 1", "pass e.g. --val-fraction 0.2"
            )
        if self.learning_rate <= 0:
            raise ConfigError(
                "--learning-rate", self.learning_rate, "a positive number", "pass e.g. --learning-rate 0.003"
            )
        if self.checkpoint_every < 0:
            raise ConfigError(
                "--checkpoint-every", self.checkpoint_every, "seconds >= 0 (0 = every batch)", "pass e.g. 600"
            )
        if self.initial_weights and not is_s3(self.initial_weights) and not os.path.isfile(self.initial_weights):
            raise ConfigError(
                "--initial-weights", self.initial_weights, "an existing weights file (local or s3://)", "check the path"
            )


# The flow's parameter attributes carry these names, so the flow passes them through by name.
TRAIN_PARAMETERS = tuple(f.name for f in fields(TrainConfig))


# ---------------------------------------------------------------------------------------------
# Labels and images


@dataclass(frozen=True)
class LabelSet:
    keys: list[str]
    labels: list[str]

    @property
    def class_names(self) -> list[str]:
        return sorted(set(self.labels))


def read_labels(storage: Storage) -> LabelSet:
    """Parse ``labels.csv`` at the input root; any problem is a one-line ConfigError."""
    where = f"{storage.uri}/{LABELS_FILE}"
    if not storage.exists(LABELS_FILE):
        raise ConfigError(
            "labels file",
            where,
            f"a {LABELS_FILE} with header key,label at the --input root",
            "add one, or make sample data with `python -m steps.sample_data DIR`",
        )
    reader = csv.DictReader(io.StringIO(storage.read(LABELS_FILE).decode("utf-8-sig")))
    if not reader.fieldnames or not {"key", "label"} <= set(reader.fieldnames):
        raise ConfigError("labels header", reader.fieldnames, "columns key,label", f"fix the first line of {where}")
    rows = sorted((row["key"].strip(), (row["label"] or "").strip()) for row in reader if row["key"])
    keys = [key for key, _ in rows]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k, n in itertools.pairwise(keys) if k == n)
        raise ConfigError("labels key", duplicate, "each key listed once", f"remove the duplicate rows from {where}")
    unlabelled = [key for key, label in rows if not label]
    if unlabelled:
        raise ConfigError("labels row", unlabelled[0], "a non-empty label", f"label it or drop the row in {where}")
    return LabelSet(keys, [label for _, label in rows])


def check_dataset(input_uri: str) -> dict[str, Any]:
    """Validate the labelled input before any training: return a small description of it."""
    storage = check_input(input_uri)
    labels = read_labels(storage)
    present = {obj.key for obj in storage.list()}
    missing = [key for key in labels.keys if key not in present]
    if missing:
        raise ConfigError(
            f"{LABELS_FILE} in {input_uri}",
            missing[0],
            "keys that name images under --input",
            f"{len(missing)} of {len(labels.keys)} listed images do not exist; fix the keys or upload the images",
        )
    counts = {name: labels.labels.count(name) for name in labels.class_names}
    if len(counts) < 2:
        raise ConfigError(
            f"labels in {input_uri}",
            labels.class_names,
            "at least two classes",
            "a classifier needs two or more labels",
        )
    return {"input": storage.uri, "images": len(labels.keys), "classes": len(counts), "per_class": counts}


def image_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """Centre-crop to a square and resize to ``size``: uint8 ``3 x size x size`` (the model's input)."""
    square = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(square, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images → float, ImageNet mean/std (recorded in the model bundle for InferFlow)."""
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - mean) / std


@dataclass
class Dataset:
    class_names: list[str]
    keys: list[str]
    images: torch.Tensor  # uint8 N x 3 x S x S, in key order
    targets: torch.Tensor  # int64 N
    rejects: list[dict[str, str]] = field(default_factory=list)


def load_dataset(input_uri: str, image_size: int, threads: int) -> Dataset:
    """Decode every labelled image (threads; reduced-size JPEG decode) into memory.

    Unreadable images become rejects, reported with their reason; training goes on without them.
    """
    storage = open_storage(input_uri, threads)
    labels = read_labels(storage)

    def one(index: int) -> tuple[int, torch.Tensor | str]:
        try:
            decoded = decode(read_input(storage, labels.keys[index]), max_side=image_size)
        except RejectedInput as err:
            return index, str(err)
        return index, image_to_tensor(decoded.image, image_size)

    results = dict(map_bounded(one, range(len(labels.keys)), threads))
    good = [i for i in range(len(labels.keys)) if isinstance(results[i], torch.Tensor)]
    rejects = [
        {"key": labels.keys[i], "reason": reason} for i, reason in sorted(results.items()) if isinstance(reason, str)
    ]
    class_names = sorted({labels.labels[i] for i in good})
    if len(class_names) < 2:
        raise ConfigError(
            f"readable images in {input_uri}",
            len(good),
            "images of at least two classes",
            f"{len(rejects)} images were unreadable; fix or relabel them",
        )
    index_of = {name: i for i, name in enumerate(class_names)}
    return Dataset(
        class_names=class_names,
        keys=[labels.keys[i] for i in good],
        images=torch.stack([results[i] for i in good]),
        targets=torch.tensor([index_of[labels.labels[i]] for i in good], dtype=torch.int64),
        rejects=rejects,
    )


# ---------------------------------------------------------------------------------------------
# Determinism


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed that is a pure function of ``seed`` and ``parts`` (stable across processes)."""
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") & (2**63 - 1)


def split_indices(targets: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified train/validation split, a pure function of the seed."""
    train: list[int] = []
    val: list[int] = []
    for cls in sorted(set(targets.tolist())):
        members = (targets == cls).nonzero().flatten()
        order = members[
            torch.randperm(len(members), generator=torch.Generator().manual_seed(derive_seed(seed, "split", cls)))
        ]
        n_val = min(len(order) - 1, round(len(order) * val_fraction))
        val += order[:n_val].tolist()
        train += order[n_val:].tolist()
    if not val:
        raise ConfigError(
            "--val-fraction", val_fraction, "a fraction that leaves validation images", "raise it or add images"
        )
    return torch.tensor(sorted(train)), torch.tensor(sorted(val))


def epoch_order(seed: int, epoch: int, count: int) -> torch.Tensor:
    return torch.randperm(count, generator=torch.Generator().manual_seed(derive_seed(seed, "order", epoch)))


def augment(batch: torch.Tensor, seed: int, epoch: int, sample_ids: list[int]) -> torch.Tensor:
    """Random flip and shift (reflect-padded crop) per sample, from a (seed, epoch, sample) generator."""
    pad = max(1, batch.shape[-1] // 8)
    padded = F.pad(batch.float(), (pad, pad, pad, pad), mode="reflect")
    size = batch.shape[-1]
    out = []
    for row, sample in zip(padded, sample_ids, strict=True):
        generator = torch.Generator().manual_seed(derive_seed(seed, "augment", epoch, sample))
        dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
        image = row[:, dy : dy + size, dx : dx + size]
        out.append(image.flip(-1) if torch.rand(1, generator=generator).item() < 0.5 else image)
    return torch.stack(out)


def make_deterministic(device: torch.device) -> None:
    # cuBLAS needs a fixed workspace for reproducible matmuls; it must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    # A few CUDA backward kernels (adaptive pooling) have no deterministic variant: warn there
    # rather than refuse to train. On CPU, the bit-identical guarantee is strict.
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        # As tensors and numbers: checkpoints load with weights_only, which refuses numpy arrays.
        "numpy_key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
        "numpy_pos": int(numpy_state["state"]["pos"]),
        "numpy_has_gauss": int(numpy_state["has_gauss"]),
        "numpy_gauss": float(numpy_state["gauss"]),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": state["numpy_key"].numpy().astype(np.uint32), "pos": state["numpy_pos"]},
            "has_gauss": state["numpy_has_gauss"],
            "gauss": state["numpy_gauss"],
        }
    )


# ---------------------------------------------------------------------------------------------
# Training


def load_initial_weights(model: nn.Module, path: str) -> None:
    """Load a state dict or TrainFlow bundle; tensors whose shape differs (a new head) stay random."""
    # Read through storage: on Batch/Kubernetes a laptop path does not exist, an s3:// URI does.
    parent, _, name = path.rpartition("/")
    payload = torch.load(io.BytesIO(open_storage(parent or ".").read(name)), map_location="cpu", weights_only=True)
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


# ---------------------------------------------------------------------------------------------
# The whole training step, its outputs and its report


@dataclass
class TrainOutcome:
    model_uri: str
    metrics: dict[str, list[float]]
    confusion: dict[str, Any]
    rejects: list[dict[str, str]]
    summary: dict[str, Any]


def model_key(run_id: str) -> str:
    return f"models/{run_id}/model.pt"


def train_run(cfg: TrainConfig, run_id: str, attempt: int, stop: threading.Event | None = None) -> TrainOutcome:
    """Load the data, train (resuming if a checkpoint exists), save the model bundle."""
    data = load_dataset(cfg.input_uri, cfg.image_size, cfg.threads)
    if data.rejects:
        first = data.rejects[0]
        log(f"{len(data.rejects)} unreadable images skipped, e.g. {first['key']}: {first['reason']}")
    store = CheckpointStore(open_storage(cfg.checkpoint_root), run_id, cfg.keep_last)
    log(f"training {cfg.architecture} on {len(data.keys)} images ({len(data.class_names)} classes) to {store.uri}")
    result = fit(cfg, data, store, stop=stop)
    output = open_storage(cfg.output_uri)
    accuracy = result.history["val_accuracy"][-1]
    ModelBundle(
        architecture=cfg.architecture,
        class_names=data.class_names,
        input_size=cfg.image_size,
        state_dict=result.state_dict,
        extra={
            "flow": "TrainFlow",
            "run_id": run_id,
            "val_accuracy": f"{accuracy:.4f}",
            "resize": "center-crop square",
        },
    ).save(output, model_key(run_id))
    model_uri = join_uri(output.uri, model_key(run_id))
    summary = {
        "architecture": cfg.architecture,
        "images": len(data.keys),
        "rejected": len(data.rejects),
        "classes": len(data.class_names),
        "epochs": cfg.epochs,
        "train_loss": round(result.history["train_loss"][-1], 4),
        "val_accuracy": round(accuracy, 4),
        "chance_accuracy": round(1 / len(data.class_names), 4),
        "device": result.device,
        "seconds": round(result.seconds, 2),
        "attempt": attempt,
        "resumed_from": result.resumed_from,
        "last_checkpoint": result.last_checkpoint,
        "checkpoints_written": result.checkpoints_written,
        "model_uri": model_uri,
    }
    return TrainOutcome(
        model_uri=model_uri,
        metrics=result.history,
        confusion={"class_names": data.class_names, "matrix": result.confusion},
        rejects=data.rejects,
        summary=summary,
    )


def settings_from(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Validated settings (the flow's ``settings`` artifact) from the flow's parameter values,
    named like TrainConfig's fields; ``checkpoint_root`` defaults to ``<output>/checkpoints``."""
    values = {name: parameters[name] for name in TRAIN_PARAMETERS}
    values["checkpoint_root"] = values["checkpoint_root"] or join_uri(values["output_uri"], "checkpoints")
    cfg = TrainConfig(**values)
    cfg.check()
    check_output(cfg.output_uri)
    return asdict(cfg)


def headline(summary: dict[str, Any]) -> str:
    resumed = f"; resumed from {summary['resumed_from']}" if summary["resumed_from"] else ""
    rejected = f" ({summary['rejected']} unreadable skipped)" if summary["rejected"] else ""
    return (
        f"Trained {summary['architecture']} on {summary['images']} images{rejected}, {summary['classes']} classes, "
        f"{summary['epochs']} epochs on {summary['device']} in {summary['seconds']:.1f} s: val accuracy "
        f"{summary['val_accuracy']:.3f} (chance {summary['chance_accuracy']:.3f}), "
        f"train loss {summary['train_loss']:.4f}"
        f"{resumed}. Model: {summary['model_uri']}"
    )


def curves_png(metrics: dict[str, list[float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(1, len(metrics["train_loss"]) + 1))
    fig, loss_ax = plt.subplots(figsize=(7, 3), dpi=100)
    loss_ax.plot(epochs, metrics["train_loss"], "o-", color="#d8573b", label="train loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_xticks(epochs)  # whole epochs, not 1.25
    loss_ax.set_ylabel("train loss", color="#d8573b")
    accuracy_ax = loss_ax.twinx()
    accuracy_ax.plot(epochs, metrics["val_accuracy"], "s-", color="#3b7dd8", label="val accuracy")
    accuracy_ax.set_ylim(0, 1.05)
    accuracy_ax.set_ylabel("val accuracy", color="#3b7dd8")
    loss_ax.set_title("Training loss and validation accuracy")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def build_report(
    summary: dict[str, Any], metrics: dict[str, list[float]], confusion: dict[str, Any], rejects: list[dict[str, str]]
) -> Report:
    names = confusion["class_names"]
    return Report(
        title="TrainFlow",
        headline=headline(summary),
        sections=[
            Chart("Loss and accuracy per epoch", curves_png(metrics)),
            Table(
                "Per-epoch metrics",
                ["epoch", "train loss", "val accuracy"],
                [
                    [i + 1, f"{loss:.4f}", f"{acc:.3f}"]
                    for i, (loss, acc) in enumerate(zip(metrics["train_loss"], metrics["val_accuracy"], strict=True))
                ],
            ),
            Table(
                "Confusion (validation; rows = true, columns = predicted)",
                ["true \\ predicted", *names],
                [[name, *row] for name, row in zip(names, confusion["matrix"], strict=True)],
            ),
            Table("Rejected inputs", ["key", "reason"], [[r["key"], r["reason"]] for r in rejects]),
            Table("Run", ["item", "value"], [[k, v] for k, v in summary.items()]),
        ],
    )
