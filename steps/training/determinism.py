"""Determinism: what makes a resumed training run bit-identical to an uninterrupted one.

Why a resumed run ends with exactly the weights of an uninterrupted one (on CPU):
- the train/validation split is a pure function of the seed, and an epoch's data order a pure
  function of (seed, epoch), so a checkpoint needs only the position (epoch, batch index); with
  several ranks each takes a fixed slice of every global batch, so what a rank reads is a pure
  function of (seed, epoch, world size, rank), a DistributedSampler that needs no state (in a gang
  with per-node slices, of (seed, epoch, nodes, ranks per node, global rank): ``sampling``);
- augmentation draws from a generator seeded from (seed, epoch, sample index), so it replays
  identically from any batch; the global RNG states (every rank's) are saved anyway, for layers
  like dropout;
- with several ranks, gradients are summed in one fixed flat layout (``trainer.Trainer._reduce``);
- deterministic algorithms, and images decoded by threads into memory up front: no DataLoader
  worker processes whose RNG and prefetch state would also have to be restored;
- the running loss sum of the epoch in progress is saved, so the epoch's metrics match too.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from steps.errors import ConfigError


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


def rank_batch(order: torch.Tensor, batch: int, batch_size: int, world_size: int, rank: int) -> torch.Tensor:
    """Rank ``rank``'s part of global batch ``batch`` of an epoch's ``order``: a contiguous slice,
    sizes differing by at most one. With one rank it is the whole batch."""
    return order[batch * batch_size : (batch + 1) * batch_size].tensor_split(world_size)[rank]


def key_split(keys: list[str], val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train/validation split of a gang's node slice: each key's side is a pure function of (seed,
    key), so no node needs another's keys and the split does not depend on the number of nodes."""
    held_out = [derive_seed(seed, "split", key) < val_fraction * 2**63 for key in keys]
    train = [i for i, val in enumerate(held_out) if not val]
    val = [i for i, val in enumerate(held_out) if val]
    return torch.tensor(train, dtype=torch.int64), torch.tensor(val, dtype=torch.int64)


def node_parts(batch_size: int, nodes: int) -> list[int]:
    """Each node's part of a global batch: sizes differing by at most one, larger parts first."""
    base, extra = divmod(batch_size, nodes)
    return [base + (node < extra) for node in range(nodes)]


def augment(batch: torch.Tensor, seed: int, epoch: int, sample_ids: Sequence[object]) -> torch.Tensor:
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
