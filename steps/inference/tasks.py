"""What one device's lane runs on a batch: the classifier's top-k, or a callable model's outputs.

``InferTask`` is the value ``infer_shard`` takes: the Parquet schema, the model's preprocessing
settings, one runner per device (``runner(batch) -> pa.Table``) and the rows of rejects.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import pyarrow as pa
import torch

from steps.errors import ConfigError, UserCodeError
from steps.imaging.placement import place
from steps.inference.outputs import LIST, OutputColumn, batch_table, probe_columns, rejected_table, schema_of
from steps.inference.pipeline import Batch, Predictor, Prepared
from steps.inference.predictions import SCHEMA
from steps.models.callable_model import CallableModel
from steps.models.loading import LoadedModel, class_names_for

PROBE_IMAGES = 2  # a blank batch of two: a model that ignores N shows it


class Runner(Protocol):
    device: torch.device
    seconds: float  # time on the model: transfer, forward and outputs

    def __call__(self, batch: Batch) -> pa.Table: ...


def rejected_row(item: Prepared) -> dict:
    return {
        "key": item.key,
        "status": "rejected",
        "reason": item.reason,
        "label": None,
        "score": None,
        "top_k_labels": [],
        "top_k_scores": [],
    }


class ClassifyRunner:
    """``Predictor``'s top-k as ``SCHEMA`` rows, built column by column (no Python per value)."""

    def __init__(self, model: LoadedModel, device: torch.device, top_k: int, labels: list[str]) -> None:
        self.predictor = Predictor(model, device, top_k)
        self.device = device
        self.labels = pa.array(labels, pa.string())

    @property
    def seconds(self) -> float:
        return self.predictor.seconds

    def __call__(self, batch: Batch) -> pa.Table:
        scores, indices = self.predictor(batch.pixels)
        n, k = scores.shape
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        columns = [
            pa.array(batch.keys, pa.string()),
            pa.array(["ok"] * n, pa.string()),
            pa.array([""] * n, pa.string()),
            self.labels.take(pa.array(indices[:, 0])),
            pa.array(scores[:, 0]),
            pa.ListArray.from_arrays(offsets, self.labels.take(pa.array(indices.ravel()))),
            pa.ListArray.from_arrays(offsets, pa.array(scores.ravel())),
        ]
        return pa.Table.from_arrays(columns, schema=SCHEMA)


@dataclass(frozen=True)
class ClassifyTask:
    model: LoadedModel
    top_k: int
    schema: pa.Schema = SCHEMA

    def runners(self, devices: Sequence[torch.device]) -> list[ClassifyRunner]:
        labels = class_names_for(self.model)
        # Predictor moves its module to its device: every lane after the first gets its own copy.
        models = [self.model] + [replace(self.model, module=copy.deepcopy(self.model.module)) for _ in devices[1:]]
        return [ClassifyRunner(m, device, self.top_k, labels) for m, device in zip(models, devices, strict=True)]

    def rejected(self, items: Sequence[Prepared]) -> pa.Table:
        return pa.Table.from_pylist([rejected_row(item) for item in items], schema=SCHEMA)


class CallableRunner:
    """A callable model on one device: uint8 NHWC batch in, normalised there, its outputs as rows."""

    def __init__(self, model: CallableModel, columns: Sequence[OutputColumn], device: torch.device) -> None:
        self.model, self.columns, self.device = model, list(columns), device
        self.function = model.build(device)
        self.schema = schema_of(columns)
        self.cuda = device.type == "cuda"
        self.mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(model.std, device=device).view(1, 3, 1, 1) * 255
        self.amp_dtype = torch.bfloat16 if self.cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.seconds = 0.0

    @torch.inference_mode()
    def outputs(self, pixels: torch.Tensor, meta: list[dict]) -> object:
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.cuda):
            try:
                return self.function(x, meta)
            except Exception as err:
                # A bug in the model's code, not a spot loss: the task fails with its traceback.
                raise UserCodeError(f"--model {self.model.uri}: the model raised {type(err).__name__}: {err}") from err

    def __call__(self, batch: Batch) -> pa.Table:
        started = time.perf_counter()
        placements = batch.placements or []
        outputs = self.outputs(batch.pixels, [p.record() for p in placements])
        table = batch_table(outputs, self.columns, batch.keys, self.schema, self.model.uri)
        self.seconds += time.perf_counter() - started
        return table


@dataclass(frozen=True)
class CallableTask:
    model: CallableModel
    columns: tuple[OutputColumn, ...]

    @property
    def schema(self) -> pa.Schema:
        return schema_of(self.columns)

    def runners(self, devices: Sequence[torch.device]) -> list[CallableRunner]:
        return [CallableRunner(self.model, self.columns, device) for device in devices]

    def rejected(self, items: Sequence[Prepared]) -> pa.Table:
        return rejected_table([i.key for i in items], [i.reason for i in items], self.schema)


def probe(model: CallableModel) -> list[OutputColumn]:
    """The output columns of ``model``, from its outputs on a blank batch on the CPU (in ``start``)."""
    size = model.input_size
    blank = place(size, size, size, model.resize, model.crop_fraction)
    pixels = torch.zeros((PROBE_IMAGES, size, size, 3), dtype=torch.uint8)
    runner = CallableRunner(model, [], torch.device("cpu"))
    try:
        outputs = runner.outputs(pixels, [blank.record()] * PROBE_IMAGES)
    except UserCodeError as err:
        cause = err.__cause__
        raise ConfigError(
            "--model",
            model.uri,
            f"the model to run on a blank batch of {PROBE_IMAGES}x3x{size}x{size}",
            f"it raised {type(cause).__name__}: {(str(cause).splitlines() or [''])[0][:200]}",
        ) from err
    return probe_columns(outputs, PROBE_IMAGES, model.uri)


InferTask = ClassifyTask | CallableTask


TASKS = ("classify", "embed", "detect")

# Fixed, not probed: a detector finds nothing on a blank image, so the probe could not tell the types.
DETECT_COLUMNS = (
    OutputColumn("boxes", LIST, "float32", 4),  # x0, y0, x1, y1 in original upright pixels
    OutputColumn("labels", LIST, "string"),
    OutputColumn("scores", LIST, "float32"),
)


def load_task(
    spec: str,
    task: str,
    *,
    top_k: int,
    min_score: float,
    columns: Sequence[dict] | None = None,
    device: torch.device | None = None,
) -> InferTask:
    """The task ``--model``/``--task`` name, loaded on the CPU; ``columns`` (the ``outputs``
    artifact) from ``start``'s probe, else probed now. ConfigError in one line for anything wrong."""
    from steps.models.detection import load_detector
    from steps.models.embedding import embedding_model
    from steps.models.huggingface import HF_PREFIX, load_hf
    from steps.models.loading import load_model
    from steps.models.open_clip_models import OPEN_CLIP_PREFIX, load_open_clip
    from steps.models.timm_models import TIMM_PREFIX, load_timm
    from steps.models.user import PYTHON_PREFIX, load_user_model

    # Other libraries' models: none detects; each loader refuses a task its model cannot do.
    libraries = {HF_PREFIX: load_hf, TIMM_PREFIX: load_timm, OPEN_CLIP_PREFIX: load_open_clip}
    library = next((prefix for prefix in libraries if spec.startswith(prefix)), None)
    if task not in TASKS:
        raise ConfigError("--task", task, f"one of {', '.join(TASKS)}", "pick the kind of outputs you want")
    if spec.startswith(PYTHON_PREFIX):
        if task != "classify":
            raise ConfigError("--task", task, "no --task with a python: model", "its outputs are what it returns")
        model = load_user_model(spec, device)
    elif library:
        if task == "detect":
            raise ConfigError(
                "--task", task, f"a torchvision detector, not a {library} model", "pass torchvision:<arch>:<weights>"
            )
        loaded = libraries[library](spec, task)
        if isinstance(loaded, LoadedModel):
            return ClassifyTask(loaded, top_k)
        model = loaded
    elif task == "classify":
        return ClassifyTask(load_model(spec), top_k)
    elif task == "embed":
        model = embedding_model(load_model(spec))
    else:
        model = load_detector(spec, min_score)
        columns = [c.to_dict() for c in DETECT_COLUMNS]
    found = probe(model) if columns is None else [OutputColumn(**c) for c in columns]
    return CallableTask(model, tuple(found))


def describe_task(task: InferTask) -> tuple[dict, list[dict] | None]:
    """The ``model`` artifact (with the output columns' types) and the ``outputs`` artifact that
    shard tasks load the task with (None for classify, whose schema is fixed). For a classifier,
    the class names are checked against its output width here, in ``start``."""
    outputs = {field.name: str(field.type) for field in task.schema}
    if isinstance(task, ClassifyTask):
        task.model.class_names = class_names_for(task.model)
        return {**task.model.identity(), "outputs": outputs}, None
    return {**task.model.identity(), "outputs": outputs}, [c.to_dict() for c in task.columns]
