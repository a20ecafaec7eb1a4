"""What each rank trains and validates on: a pure function of (seed, epoch, layout, rank), no state.

- ``Sampler``, the whole labelled set in every process (one instance, any number of ranks): a
  stratified split by the seed, one epoch order over every training image, and each rank a
  contiguous share of every global batch;
- ``NodeSampler``, a gang whose nodes each decoded only their slice of the input
  (``steps.training.gang_inputs``): the split is a pure function of (seed, key), each node shuffles
  its own training images every epoch (seeded by seed, epoch and node), global batch b is every
  node's b-th part (the batch split across the nodes), and each of the node's ranks trains a
  contiguous share of its node's part. Validation is the node's held-out images, split across its
  ranks; the trainer sums the confusion counts over every rank.

Either way a checkpoint needs only the position (epoch, batch): the same layout replays the same
batches, so a retry resumes bit-identically.
"""

from __future__ import annotations

import torch

from steps.training.collective import Group
from steps.training.config import TrainConfig
from steps.training.data import Dataset, GangSlice
from steps.training.determinism import (
    derive_seed,
    epoch_order,
    key_split,
    node_parts,
    rank_batch,
    split_indices,
)


class Sampler:
    """The whole set on one instance: ``world_size`` ranks share every global batch."""

    def __init__(self, cfg: TrainConfig, data: Dataset, group: Group) -> None:
        self.cfg = cfg
        self.data = data
        self.group = group
        self.train_ids, self.val_ids = self.split()
        self.train_images, self.val_images = len(self.train_ids), len(self.val_ids)
        # Full batches only: BatchNorm cannot train on a batch of one.
        self.per_epoch = max(1, len(self.train_ids) // cfg.batch_size)

    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        return split_indices(self.data.targets, self.cfg.val_fraction, self.cfg.seed)

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's training images (indices into ``data``) in the order batches take them."""
        return self.train_ids[epoch_order(self.cfg.seed, epoch, len(self.train_ids))]

    def rank_ids(self, order: torch.Tensor, batch: int) -> torch.Tensor:
        """This rank's images of global batch ``batch``."""
        return rank_batch(order, batch, self.cfg.batch_size, self.group.world_size, self.group.rank)

    def val_share(self) -> torch.Tensor:
        """This rank's validation images."""
        return self.val_ids.tensor_split(self.group.world_size)[self.group.rank]

    def augment_ids(self, ids: torch.Tensor) -> list[object]:
        """What seeds each image's augmentation (with seed and epoch): its index in the set."""
        return ids.tolist()


class NodeSampler(Sampler):
    """A gang node's slice (``data.gang``): its ranks share the node's part of every global batch."""

    def __init__(self, cfg: TrainConfig, data: Dataset, group: Group, gang: GangSlice) -> None:
        super().__init__(cfg, data, group)
        self.node = gang.node
        self.part = node_parts(cfg.batch_size, gang.nodes)[gang.node]
        self.local_ranks = group.world_size // gang.nodes
        self.local_rank = group.rank - gang.node * self.local_ranks
        self.train_images, self.val_images, self.per_epoch = gang.train_images, gang.val_images, gang.per_epoch

    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        return key_split(self.data.keys, self.cfg.val_fraction, self.cfg.seed)

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "order", epoch, "node", self.node))
        return self.train_ids[torch.randperm(len(self.train_ids), generator=generator)]

    def rank_ids(self, order: torch.Tensor, batch: int) -> torch.Tensor:
        return order[batch * self.part : (batch + 1) * self.part].tensor_split(self.local_ranks)[self.local_rank]

    def val_share(self) -> torch.Tensor:
        return self.val_ids.tensor_split(self.local_ranks)[self.local_rank]

    def augment_ids(self, ids: torch.Tensor) -> list[object]:
        """The image's key: the same augmentation whichever node holds it."""
        return [self.data.keys[i] for i in ids.tolist()]


def sampler_for(cfg: TrainConfig, data: Dataset, group: Group) -> Sampler:
    return Sampler(cfg, data, group) if data.gang is None else NodeSampler(cfg, data, group, data.gang)
