"""The few collective operations training needs, for one process or a torch.distributed group.

The trainer is written once against ``Group``: with one process (``Solo``) every operation is
the identity and nothing is communicated, so world size 1 trains exactly as a plain loop does.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.distributed as dist


class Group(Protocol):
    rank: int
    world_size: int

    @property
    def is_writer(self) -> bool:
        """Rank 0: the one that writes checkpoints and emits events."""
        ...

    def sum_(self, tensor: torch.Tensor) -> None:
        """Sum ``tensor`` across ranks, in place."""
        ...

    def any_flags(self, flags: list[bool]) -> list[bool]:
        """Each flag set on any rank, on every rank, so all ranks take the same branch."""
        ...

    def rank0_value(self, value: Any) -> Any:
        """Rank 0's (picklable) value on every rank."""
        ...

    def gather(self, value: Any) -> list[Any]:
        """Every rank's (picklable) value, in rank order, on every rank."""
        ...


class Solo:
    """World size 1: nothing to communicate."""

    rank = 0
    world_size = 1
    is_writer = True

    def sum_(self, tensor: torch.Tensor) -> None:
        return None

    def any_flags(self, flags: list[bool]) -> list[bool]:
        return flags

    def rank0_value(self, value: Any) -> Any:
        return value

    def gather(self, value: Any) -> list[Any]:
        return [value]


class TorchGroup:
    """The default torch.distributed process group (already initialised); tensors live on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def sum_(self, tensor: torch.Tensor) -> None:
        # NCCL reduces device tensors only; results such as a confusion matrix live on the CPU.
        on_device = tensor.to(self.device)
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        if on_device is not tensor:
            tensor.copy_(on_device)

    def any_flags(self, flags: list[bool]) -> list[bool]:
        shared = torch.tensor(flags, dtype=torch.int32, device=self.device)
        dist.all_reduce(shared, op=dist.ReduceOp.MAX)
        return [bool(flag) for flag in shared.tolist()]

    def rank0_value(self, value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered
