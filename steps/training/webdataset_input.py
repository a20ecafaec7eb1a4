"""TrainFlow ``--input`` that is a PreprocessFlow ``--format webdataset`` output: labelled
samples from its tar shards (steps/preprocess/webdataset.py) instead of images + labels.csv.

Only shards with a completion manifest count, so a half-written run's tars are never read.
Tars are read one at a time (bounded memory beyond the decoded dataset itself); a gang node reads
only its share of them (``steps.training.data.load_dataset``). A sample without a label (its
input had no labels.csv row) or with an unreadable image is a reject.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from steps.errors import ConfigError, RejectedInput
from steps.imaging.codec import decode
from steps.io.storage import Storage
from steps.output.layout import LABELS_FILE, MANIFEST_DIR, WEBDATASET_DIR, object_stem, webdataset_directory


def webdataset_tars(storage: Storage) -> list[str]:
    """Sorted tar keys of the complete shards under ``storage``."""
    shards = {object_stem(o.key) for o in storage.list(MANIFEST_DIR + "/") if o.key.endswith(".parquet")}
    return sorted(
        o.key
        for o in storage.list(WEBDATASET_DIR + "/")
        if o.key.endswith(".tar") and o.key.rsplit("/", 1)[0] in {webdataset_directory(s) for s in shards}
    )


def is_webdataset_input(storage: Storage) -> bool:
    return not storage.exists(LABELS_FILE) and bool(webdataset_tars(storage))


def samples(
    storage: Storage, images: bool = True, tars: list[str] | None = None, sizes: list[int] | None = None
) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(metadata, resized JPEG bytes or b"") per sample of ``tars`` (default: every complete one), in
    tar and member order; each tar's size is appended to ``sizes`` when given."""
    for tar_key in webdataset_tars(storage) if tars is None else tars:
        data = storage.read(tar_key)
        if sizes is not None:
            sizes.append(len(data))
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            members: dict[str, dict[str, bytes]] = {}
            for member in archive.getmembers():
                sample_id, _, extension = member.name.partition(".")
                if extension == "json" or (images and extension == "jpg"):
                    members.setdefault(sample_id, {})[extension] = archive.extractfile(member).read()
        for parts in members.values():
            yield json.loads(parts["json"]), parts.get("jpg", b"")


def describe_webdataset(storage: Storage) -> dict[str, Any]:
    """check_dataset's answer for shards: labelled samples and classes (reads the metadata only)."""
    counts = Counter(meta["label"] for meta, _ in samples(storage, images=False) if meta.get("label"))
    if len(counts) < 2:
        raise ConfigError(
            f"labels in {storage.uri}", sorted(counts), "at least two classes", "preprocess an input with labels.csv"
        )
    return {"input": storage.uri, "images": sum(counts.values()), "classes": len(counts), "per_class": dict(counts)}


@dataclass
class LoadedSamples:
    """The readable labelled samples of some tars, the rejects, and the tars' sizes."""

    keys: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)
    rejects: list[dict[str, str]] = field(default_factory=list)
    tar_sizes: list[int] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(self.tar_sizes)


def load_webdataset(storage: Storage, tars: list[str], to_tensor) -> LoadedSamples:
    """The samples of ``tars``, decoded; ``to_tensor`` maps a decoded image."""
    loaded = LoadedSamples()
    for meta, jpeg in samples(storage, tars=tars, sizes=loaded.tar_sizes):
        try:
            if not meta.get("label"):
                raise RejectedInput(f"no label for {meta['key']} in the preprocessed input's {LABELS_FILE}")
            tensor = to_tensor(decode(jpeg).image)
        except RejectedInput as err:
            loaded.rejects.append({"key": meta["key"], "reason": str(err)})
            continue
        loaded.keys.append(meta["key"])
        loaded.labels.append(meta["label"])
        loaded.images.append(tensor)
    return loaded
