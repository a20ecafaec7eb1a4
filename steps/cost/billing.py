"""What a run's work cost on the chosen instance: billed task time, or the calibrated rate locally.

On AWS Batch or Kubernetes every attempt of every task (killed and retried ones too,
``steps.output.attempts``) is billed task time, at the chosen instance's spot price shared by
the tasks one instance runs side by side. A laptop's seconds say nothing about an instance, so a
local run is priced as the same work would cost there: the images its attempts processed, killed
attempts' committed chunks and the chunk each killed attempt lost in flight included, at the
calibrated seconds per image (config/throughput.toml). Never a ratio of laptop times: a retry that
only finds its shard complete takes ~0 s, and dividing by it made one run's bill 1,275 times too high.
Every bill carries its basis as one sentence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from steps.report import human


@dataclass(frozen=True)
class BillingRate:
    """What one task-hour costs on the chosen instance, and how fast a task is there."""

    region: str
    instance_type: str
    resources: str  # what one task asks for, e.g. "no GPU, 4 vCPU, 8000 MB"
    spot_usd_per_hour: float  # the whole instance
    tasks_per_instance: int
    seconds_per_image: float  # one task on this instance type, calibrated
    rate_source: str

    @property
    def usd_per_task_hour(self) -> float:
        return self.spot_usd_per_hour / self.tasks_per_instance

    def describe(self) -> str:
        sharing = f", {self.tasks_per_instance} tasks an instance" if self.tasks_per_instance > 1 else ""
        return (
            f"{self.resources} a task on spot {self.instance_type} in {self.region}{sharing} "
            f"@ ${self.usd_per_task_hour:.4g}/h per task"
        )

    def to_artifact(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Work:
    """What the tasks of a run did: images processed now, attempts, and their task time."""

    images: int  # committed by this run's attempts, killed ones included (earlier runs' chunks excluded)
    redone_images: int  # processed again after a kill: at most the chunk each killed attempt had in flight
    attempts: int
    retried_attempts: int
    billed_seconds: float  # every attempt


@dataclass(frozen=True)
class Bill:
    task_hours: float
    usd: float
    basis: str


def _attempts(work: Work) -> str:
    retried = f" incl. {work.retried_attempts} retried" if work.retried_attempts else ""
    return f"{work.attempts} attempts{retried}"


def bill(rate: BillingRate, work: Work, *, on_cloud: bool) -> Bill:
    """The cost of ``work`` at ``rate``: task time on cloud, the calibrated rate locally."""
    if on_cloud:
        hours = work.billed_seconds / 3600
        return Bill(
            hours,
            hours * rate.usd_per_task_hour,
            f"{rate.describe()} × {human(hours)} task-hours billed ({_attempts(work)})",
        )
    hours = (work.images + work.redone_images) * rate.seconds_per_image / 3600
    redone = (
        f" + {work.redone_images} images redone after killed attempts (at most the chunk each had in flight)"
        if work.redone_images
        else ""
    )
    return Bill(
        hours,
        hours * rate.usd_per_task_hour,
        f"local run, priced as the same work on {rate.describe()}: ({work.images} images{redone}) × "
        f"{rate.seconds_per_image * 1000:.3g} ms/image ({rate.rate_source}) = {human(hours)} task-hours "
        f"({_attempts(work)}); laptop seconds are not billed",
    )
