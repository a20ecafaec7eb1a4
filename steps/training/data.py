"""The labelled input: labels.csv, and every labelled image (or a gang node's slice) decoded into memory.

Input: a directory or ``s3://`` prefix of images with ``labels.csv`` (header ``key,label``; each key
relative to the input root) at its root, which is what ``spot-batch sample-data DIR`` writes.
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from steps.errors import ConfigError, RejectedInput
from steps.imaging.codec import decode
from steps.io.concurrency import map_bounded
from steps.io.storage import Storage, open_storage, read_input
from steps.io.validation import check_input
from steps.models.architectures import IMAGENET_MEAN, IMAGENET_STD
from steps.output.layout import LABELS_FILE
from steps.training.webdataset_input import describe_webdataset, is_webdataset_input, load_webdataset, webdataset_tars


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
            "add one, or make sample data with `spot-batch sample-data DIR`",
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
    if is_webdataset_input(storage):
        return describe_webdataset(storage)
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


@dataclass(frozen=True)
class InputRead:
    """What loading read: ``objects`` of the input's ``listed`` ``unit`` (images, or tars for a
    WebDataset input) and their bytes."""

    objects: int
    listed: int
    unit: str
    bytes: int


@dataclass(frozen=True)
class GangSlice:
    """A gang node's slice as every node agreed before training (``steps.training.gang_inputs``)."""

    node: int
    nodes: int
    per_epoch: int  # global batches an epoch: as many as the node with the fewest training images fills
    train_images: int  # on every node together
    val_images: int


@dataclass
class Dataset:
    class_names: list[str]
    keys: list[str]
    images: torch.Tensor  # uint8 N x 3 x S x S, in key order
    targets: torch.Tensor  # int64 N
    read: InputRead
    rejects: list[dict[str, str]] = field(default_factory=list)
    gang: GangSlice | None = None  # set: this node's slice of a gang's input


def load_dataset(input_uri: str, image_size: int, threads: int, part: int = 0, parts: int = 1) -> Dataset:
    """Decode the labelled images (threads; reduced-size JPEG decode) into memory: every one, or
    with ``parts`` > 1 slice ``part``: every ``parts``-th key of the sorted labels.csv keys from
    the ``part``-th on (of a WebDataset input, every ``parts``-th tar), nothing else read.

    Unreadable images become rejects, reported with their reason; training goes on without them.
    """
    storage = open_storage(input_uri, threads)
    if is_webdataset_input(storage):
        tars = webdataset_tars(storage)
        mine = tars[part::parts]
        loaded = load_webdataset(storage, mine, lambda image: image_to_tensor(image, image_size))
        read = InputRead(len(mine), len(tars), "tars", loaded.bytes)
        return dataset_of(input_uri, loaded.keys, loaded.labels, loaded.images, loaded.rejects, read=read, parts=parts)
    labels = read_labels(storage)
    mine = range(part, len(labels.keys), parts)

    def one(index: int) -> tuple[int, torch.Tensor | str, int]:
        data = b""
        try:
            data = read_input(storage, labels.keys[index])
            decoded = decode(data, max_side=image_size)
        except RejectedInput as err:
            return index, str(err), len(data)
        return index, image_to_tensor(decoded.image, image_size), len(data)

    results = {index: (image, size) for index, image, size in map_bounded(one, mine, threads)}
    good = [i for i in mine if isinstance(results[i][0], torch.Tensor)]
    rejects = [{"key": labels.keys[i], "reason": results[i][0]} for i in mine if isinstance(results[i][0], str)]
    read = InputRead(len(mine), len(labels.keys), "images", sum(size for _, size in results.values()))
    images = [results[i][0] for i in good]
    return dataset_of(
        input_uri,
        [labels.keys[i] for i in good],
        [labels.labels[i] for i in good],
        images,
        rejects,
        read=read,
        parts=parts,
    )


def dataset_of(
    input_uri: str,
    keys: list[str],
    labels: list[str],
    images: list[torch.Tensor],
    rejects: list[dict[str, str]],
    *,
    read: InputRead,
    parts: int,
) -> Dataset:
    """The in-memory dataset of the readable labelled images (classes sorted by name). A gang
    node's slice (``parts`` > 1) may hold fewer classes: the gang agrees on them later."""
    class_names = sorted(set(labels))
    if parts > 1 and not keys:
        raise ConfigError(
            f"readable images in one node's slice of {input_uri}",
            0,
            "at least one",
            f"{len(rejects)} of its images were unreadable; fix them or pass fewer --nodes",
        )
    if parts == 1 and len(class_names) < 2:
        raise ConfigError(
            f"readable images in {input_uri}",
            len(keys),
            "images of at least two classes",
            f"{len(rejects)} images were unreadable; fix or relabel them",
        )
    index_of = {name: i for i, name in enumerate(class_names)}
    return Dataset(
        class_names=class_names,
        keys=keys,
        images=torch.stack(images),
        targets=torch.tensor([index_of[label] for label in labels], dtype=torch.int64),
        rejects=rejects,
        read=read,
    )
