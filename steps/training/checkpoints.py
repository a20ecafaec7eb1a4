"""Training checkpoints that survive a spot loss: written atomically, found again on retry.

Layout under the checkpoint root, one folder per Metaflow run:

    <root>/<run id>/ckpt-<step>.pt     torch.save of the training state (weights_only-loadable)
    <root>/<run id>/ckpt-<step>.json   commit marker: size + sha256 of the .pt, written LAST

A checkpoint is complete only when its marker exists and the data file matches the marker's size
and hash. A process killed mid-write leaves a data file without a marker (or, on a store without
atomic writes, a short file): both are ignored and the previous checkpoint is used instead.
``<step>`` is the number of optimizer steps taken, zero-padded so names sort in training order.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import torch
from botocore.exceptions import ClientError

from steps.errors import ConfigError
from steps.io.storage import Storage, open_storage
from steps.progress import log

CHECKPOINT_FORMAT = "spot-batch-checkpoint/1"


_NAME = re.compile(r"ckpt-(\d+)\.(pt|json)$")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:010d}"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, verified checkpoint: where it came from and the state dict that was saved."""

    uri: str
    step: int
    state: dict[str, Any]


@dataclass(frozen=True)
class SavedCheckpoint:
    uri: str
    bytes: int


def state_to_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    return buffer.getvalue()


def state_from_bytes(data: bytes, source: str) -> dict[str, Any]:
    # weights_only: a checkpoint is data (tensors, numbers, lists), never pickled code.
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            "checkpoint", source, f"a {CHECKPOINT_FORMAT} file from TrainFlow", "pass a ckpt-*.pt or its run folder"
        )
    return state


class CheckpointStore:
    """The checkpoints of one run: ``<storage root>/<run_dir>/``."""

    def __init__(self, storage: Storage, run_dir: str, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ConfigError("--keep-last", keep_last, "1 or more checkpoints to keep", "pass --keep-last 1 or higher")
        self.storage = storage
        self.run_dir = run_dir.strip("/")
        self.keep_last = keep_last

    @property
    def uri(self) -> str:
        return f"{self.storage.uri}/{self.run_dir}" if self.run_dir else self.storage.uri

    def _key(self, name: str) -> str:
        return f"{self.run_dir}/{name}" if self.run_dir else name

    def _steps(self, extension: str) -> list[int]:
        prefix = self.run_dir + "/" if self.run_dir else ""
        found = []
        for obj in self.storage.list(prefix):
            match = _NAME.search(obj.key)
            # Only this folder's own files: a run folder's parent may hold other runs.
            if match and match.group(2) == extension and obj.key.count("/") == prefix.count("/"):
                found.append(int(match.group(1)))
        return sorted(found)

    def save(self, step: int, state: dict[str, Any]) -> SavedCheckpoint:
        """Write the data file, then its commit marker; prune to the newest ``keep_last``."""
        name = checkpoint_name(step)
        data = state_to_bytes(state)
        self.storage.write(self._key(name + ".pt"), data)
        marker = {
            "format": CHECKPOINT_FORMAT,
            "file": name + ".pt",
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "step": step,
            "epoch": state.get("epoch"),
            "batch": state.get("batch"),
            "written_at": time.time(),
        }
        self.storage.write(self._key(name + ".json"), json.dumps(marker).encode())
        self._prune(step)
        return SavedCheckpoint(f"{self.uri}/{name}.pt", len(data))

    def _prune(self, newest: int) -> None:
        committed = self._steps("json")
        for old in committed[: -self.keep_last]:
            # Marker first: a prune cut short leaves an uncommitted file, never a marker without data.
            self.storage.delete(self._key(checkpoint_name(old) + ".json"))
            self.storage.delete(self._key(checkpoint_name(old) + ".pt"))
        kept = set(committed[-self.keep_last :])
        for orphan in self._steps("pt"):
            # Data files older than the newest commit that never got a marker: torn writes.
            if orphan < newest and orphan not in kept:
                self.storage.delete(self._key(checkpoint_name(orphan) + ".pt"))

    def committed_steps(self) -> list[int]:
        return self._steps("json")

    def load(self, step: int) -> Checkpoint | None:
        """The checkpoint at ``step`` if it is complete and intact, else None (with a log line)."""
        name = checkpoint_name(step)
        try:
            marker = json.loads(self.storage.read(self._key(name + ".json")))
            data = self.storage.read(self._key(name + ".pt"))
        except (OSError, ValueError, ClientError) as err:
            log(f"checkpoint {self.uri}/{name}: unreadable ({err.__class__.__name__}: {err}), skipping it")
            return None
        if len(data) != marker.get("bytes") or hashlib.sha256(data).hexdigest() != marker.get("sha256"):
            log(f"checkpoint {self.uri}/{name}.pt: {len(data)} bytes, not what its commit marker says (torn), skipping")
            return None
        return Checkpoint(f"{self.uri}/{name}.pt", step, state_from_bytes(data, f"{self.uri}/{name}.pt"))

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, skipping torn ones; None when there is none."""
        for step in reversed(self.committed_steps()):
            checkpoint = self.load(step)
            if checkpoint is not None:
                return checkpoint
        return None


def load_resume_from(uri: str) -> Checkpoint:
    """``--resume-from``: a ``ckpt-*.pt`` file (its ``.json`` marker beside it) or a run's
    checkpoint folder (its newest complete checkpoint)."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    match = _NAME.search(name)
    if match is None:
        found = CheckpointStore(open_storage(uri.rstrip("/")), "").latest()
    else:
        found = CheckpointStore(open_storage(parent or "."), "").load(int(match.group(1)))
    if found is None:
        raise ConfigError(
            "--resume-from",
            uri,
            "a complete checkpoint (ckpt-*.pt with its ckpt-*.json marker) or a folder of them",
            "pass a checkpoint path printed by an earlier TrainFlow run, copied together with its marker",
        )
    return found
