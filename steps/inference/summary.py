"""InferFlow's own figures in its run summary: the model's busy time, the devices and accuracy.

The ``FlowStats`` extension of ``steps.stats.summary.RunSummary``: each shard task reports them,
the join adds them up with the generic counts, time and cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from steps.report import human
from steps.stats.summary import FlowStats, ShardStats


@dataclass(frozen=True)
class InferenceStats(FlowStats):
    model_seconds: float = 0.0  # time the model was busy (transfer + forward + top-k)
    gpu_seconds: float = 0.0  # task time of shards that ran on CUDA
    devices: tuple[str, ...] = ()
    labelled: int = 0  # predicted images with a ground-truth label
    correct: int = 0

    @classmethod
    def of_shard(
        cls, stats: ShardStats, device: str = "", model_seconds: float = 0.0, labelled: int = 0, correct: int = 0
    ) -> InferenceStats:
        task_seconds = sum(stats.attempt_seconds or (stats.seconds,))
        return cls(
            model_seconds=model_seconds,
            gpu_seconds=task_seconds if device.startswith("cuda") else 0.0,
            devices=(device,) if device else (),
            labelled=labelled,
            correct=correct,
        )

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def to_artifact(self) -> dict:
        accuracy = self.accuracy
        return {**super().to_artifact(), "accuracy": None if accuracy is None else round(accuracy, 4)}

    def work_phrase(self) -> str:
        if not self.devices:
            return ""
        return (
            f"; model busy {self.model_seconds:.1f} s on {', '.join(self.devices)}, {self.gpu_seconds:.1f} GPU-seconds"
        )

    def outcome_phrase(self) -> str:
        accuracy = self.accuracy
        return f", accuracy {accuracy:.1%} on {self.labelled} labelled images" if accuracy is not None else ""

    def rows(self) -> list[list[object]]:
        rows: list[list[object]] = []
        if self.devices:
            rows += [
                ["devices", ", ".join(self.devices)],
                ["model busy (s)", human(self.model_seconds)],
                ["GPU task time (s)", human(self.gpu_seconds)],
            ]
        if self.accuracy is not None:
            rows.append(["accuracy (labelled images)", f"{self.accuracy:.1%} ({self.labelled})"])
        return rows
