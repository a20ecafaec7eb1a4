"""How long a task takes per image: the calibrated figures in ``config/throughput.toml``.

Pure: no I/O but reading that file. Shard sizing (``--task-minutes``) and cost estimates use the
same ``ImageCost``, so a plan's task minutes and its dollars come from one figure.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass

from steps.config_files import CONFIG_DIR
from steps.errors import ConfigError

THROUGHPUT_PATH = CONFIG_DIR / "throughput.toml"


@dataclass(frozen=True)
class ImageCost:
    """Milliseconds one task of ``flow`` spends per image, on ``basis`` (``"4 vCPUs"`` or an
    instance type), and where the figure comes from."""

    flow: str
    basis: str
    ms_per_image: float
    source: str

    def describe(self) -> str:
        return f"{self.ms_per_image:g} ms per image ({self.flow} on {self.basis}; {self.source})"


def read_throughput() -> dict:
    return tomllib.loads(THROUGHPUT_PATH.read_text())


def image_cost(config: Mapping, flow: str, *, vcpus: int = 1, instance_type: str | None = None) -> ImageCost:
    """The per-task cost of ``flow``: per-vCPU figures divided by ``vcpus``; per-instance figures
    for ``instance_type`` (default: the flow's ``instance_type`` in the file)."""
    section = config.get(flow)
    if section is None:
        raise ConfigError("throughput flow", flow, f"one of {sorted(config)}", "add a section to throughput.toml")
    if section["basis"] == "vcpu":
        if vcpus < 1:
            raise ConfigError("vCPUs", vcpus, "at least 1", "set the flow's [resources] cpu")
        return ImageCost(flow, f"{vcpus} vCPUs", section["ms_per_image"] / vcpus, section["source"])
    chosen = instance_type or section["instance_type"]
    figures = section["instances"].get(chosen)
    if figures is None:
        raise ConfigError(
            "instance type",
            chosen,
            f"one with a figure in throughput.toml ({', '.join(section['instances'])})",
            f'add [{flow}.instances."{chosen}"] ms_per_image = ...',
        )
    return ImageCost(flow, chosen, figures["ms_per_image"], figures["source"])


def task_minutes(images: int, cost: ImageCost) -> float:
    """Estimated minutes of work for one task of ``images`` (start-up not included)."""
    return images * cost.ms_per_image / 60_000


def images_for(minutes: float, cost: ImageCost) -> int:
    """How many images one task handles in ``minutes``: at least 1."""
    return max(1, math.floor(minutes * 60_000 / cost.ms_per_image))
