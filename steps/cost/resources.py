"""What one task of a step asks for, and how many such tasks an instance type holds.

A flow's ``[resources]`` config is its shard step's ``@resources``; the cost model prices only
instance types that hold one task, of the step's kind: GPU types for GPU steps, CPU types otherwise.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass

from steps.config_files import config_file
from steps.cost.prices import InstanceShape

MIB_PER_GIB = 1024


@dataclass(frozen=True)
class StepResources:
    """What one task of a step asks for: its ``@resources`` (the flow's ``[resources]`` config)."""

    cpu: int
    gpu: int = 0
    memory_mb: int = 0

    @classmethod
    def from_config(cls, resources: Mapping) -> StepResources:
        return cls(int(resources.get("cpu", 1)), int(resources.get("gpu", 0)), int(resources.get("memory", 0)))

    def describe(self) -> str:
        gpu = f"{self.gpu} GPU, " if self.gpu else "no GPU, "
        memory = f", {self.memory_mb} MB" if self.memory_mb else ""
        return f"{gpu}{self.cpu} vCPU{memory}"

    def tasks_per_instance(self, shape: InstanceShape) -> int:
        """How many such tasks one instance of ``shape`` runs side by side; 0: not a candidate.

        A step without a GPU never goes on a GPU instance (it would pay for an idle GPU) and a GPU
        step never on a CPU one. Memory is the nominal size of the instance.
        """
        if (self.gpu > 0) != (shape.gpus > 0):
            return 0
        fits = [shape.vcpus // max(1, self.cpu)]
        if self.gpu:
            fits.append(shape.gpus // self.gpu)
        if self.memory_mb:
            fits.append(int(shape.memory_gib * MIB_PER_GIB) // self.memory_mb)
        return min(fits)


def flow_resources(flow: str) -> StepResources:
    """The work step's resources in ``config/<flow>.toml``: what a run of ``flow`` started without
    ``--config`` asks for (DispatchFlow picks its children's Batch queue by it)."""
    with open(config_file(f"{flow}.toml"), "rb") as config:
        return StepResources.from_config(tomllib.load(config).get("resources", {}))
