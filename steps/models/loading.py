"""Load the model InferFlow runs, from any of the forms ``--model`` accepts, offline.

* a ModelBundle written by TrainFlow (``steps.models.bundle``), local path or ``s3://`` URI;
* a TorchScript file (``torch.jit.save``), local or ``s3://``. Optional metadata, in order of
  precedence: a sidecar ``<file>.classes.txt`` (one class name per line), then an extra file
  ``spot_batch.json`` saved inside the archive, e.g.
  ``torch.jit.save(m, f, _extra_files={"spot_batch.json": json.dumps({"classes": [...],
  "input_size": 64, "mean": [...], "std": [...], "crop_fraction": 0.875})})`` (every field
  optional). Without class
  names the labels are the output indices ``"0"``, ``"1"``, ...; without an input size, 224
  and ImageNet normalization;
* ``torchvision:<arch>:<weights file>``: a torchvision architecture with a local state_dict
  (e.g. ``resnet18-f37072fd.pth`` copied from a machine that has internet). Labels are the
  ImageNet category names torchvision ships for 1000-way weights, or the sidecar
  ``<weights file>.classes.txt`` (which also sets the number of outputs).

``latest`` (the newest TrainFlow run) is resolved by the flow, which may use the Metaflow
client; this package never imports Metaflow. Anything wrong raises ``ConfigError`` in one line.
"""

from __future__ import annotations

import io
import json
import pickle
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from steps.errors import ConfigError, not_tensors
from steps.io.storage import is_s3, open_storage
from steps.models.architectures import IMAGENET_MEAN, IMAGENET_STD, build_architecture
from steps.models.bundle import ModelBundle
from steps.models.forms import MODEL_FORMS


def class_names_for(model: LoadedModel) -> list[str]:
    """The model's labels, checked against its real output width with one blank image (CPU)."""
    size = model.input_size
    try:
        with torch.inference_mode():
            logits = model.module(torch.zeros((1, 3, size, size)))
    except RuntimeError as err:
        logits = err
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        detail = str(logits).splitlines()[0][:160] if isinstance(logits, RuntimeError) else type(logits).__name__
        raise ConfigError(
            "--model",
            model.uri,
            f"a classifier mapping 1x3x{size}x{size} images to 1xN scores",
            f"export the model with that input size (or set input_size in its metadata); got {detail}",
        )
    outputs = logits.shape[1]
    if model.class_names and len(model.class_names) != outputs:
        raise ConfigError(
            "class names of",
            model.uri,
            f"{outputs} names, one per model output (got {len(model.class_names)})",
            "fix the classes file or pass the matching model",
        )
    return model.class_names or [str(i) for i in range(outputs)]


TORCHVISION_PREFIX = "torchvision:"


CLASSES_SUFFIX = ".classes.txt"


TORCHSCRIPT_META = "spot_batch.json"


DEFAULT_INPUT_SIZE = 224


IMAGENET_CROP_FRACTION = 0.875  # resize to 256, keep the centre 224


TRAINFLOW_CROP_FRACTION = 1.0  # TrainFlow trains on the whole centred square (ImageOps.fit)


@dataclass
class LoadedModel:
    """A ready-to-run model (eval mode, on CPU) and what it needs to preprocess its input."""

    module: nn.Module
    uri: str
    kind: str  # "bundle", "torchscript" or "torchvision"
    architecture: str
    class_names: list[str]
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_fraction: float = IMAGENET_CROP_FRACTION  # see steps.inference.pipeline.prepare_image
    resize: str = "crop"  # steps.imaging.placement: classifiers see the centre crop

    def identity(self) -> dict:
        """The ``model`` artifact: enough to tell which model produced a set of predictions."""
        return {
            "uri": self.uri,
            "type": self.kind,
            "architecture": self.architecture,
            "classes": len(self.class_names),
            "class_names": self.class_names[:50],
            "input_size": self.input_size,
            "crop_fraction": self.crop_fraction,
        }


def _read_optional(uri: str) -> bytes | None:
    """Bytes of the local file or S3 object ``uri``, or None when there is none."""
    root, _, name = uri.rstrip("/").rpartition("/")
    storage = open_storage(root or ".")
    return storage.read(name) if name and storage.exists(name) else None


def read_required(uri: str, what: str) -> bytes:
    data = _read_optional(uri)
    if data is None:
        raise ConfigError(
            what, uri, "an existing file or s3:// object", f"check the path, or pass --model {MODEL_FORMS}"
        )
    return data


def local_file(uri: str, what: str) -> Path:
    """``uri`` as a local path, for libraries that load from one: an ``s3://`` object is copied
    into a temporary directory under its own name (its suffix tells ``.safetensors`` apart)."""
    if not is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            raise ConfigError(what, uri, "an existing file or s3:// object", "check the path (absolute?)")
        return path.resolve()
    local = Path(tempfile.mkdtemp(prefix="spot-batch-model-")) / uri.rpartition("/")[2]
    local.write_bytes(read_required(uri, what))
    return local


def sidecar_classes(uri: str) -> list[str] | None:
    data = _read_optional(uri + CLASSES_SUFFIX)
    if data is None:
        return None
    return [line.strip() for line in data.decode().splitlines() if line.strip()]


def _is_torchscript(data: bytes) -> bool:
    """TorchScript archives hold compiled code (``<name>/code/``); torch.save archives do not."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _load_torchscript(uri: str, data: bytes) -> LoadedModel:
    extra = {TORCHSCRIPT_META: ""}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    except RuntimeError as err:
        raise ConfigError(
            "--model", uri, "a loadable TorchScript file", f"re-export it with torch.jit.save ({err})"
        ) from err
    try:
        meta = json.loads(extra[TORCHSCRIPT_META] or "{}")
    except json.JSONDecodeError as err:
        raise ConfigError(f"{TORCHSCRIPT_META} in", uri, "a JSON object", f"fix the extra file ({err})") from err
    classes = sidecar_classes(uri) or [str(c) for c in meta.get("classes", [])]
    return LoadedModel(
        module=module.eval(),
        uri=uri,
        kind="torchscript",
        architecture=getattr(module, "original_name", "torchscript"),
        class_names=classes,
        input_size=int(meta.get("input_size", DEFAULT_INPUT_SIZE)),
        mean=tuple(meta.get("mean", IMAGENET_MEAN)),
        std=tuple(meta.get("std", IMAGENET_STD)),
        crop_fraction=float(meta.get("crop_fraction", IMAGENET_CROP_FRACTION)),
    )


def _load_bundle(uri: str, data: bytes) -> LoadedModel:
    bundle = ModelBundle.from_bytes(data, source=uri)
    return LoadedModel(
        module=bundle.build(),
        uri=uri,
        kind="bundle",
        architecture=bundle.architecture,
        class_names=bundle.class_names,
        input_size=bundle.input_size,
        mean=bundle.mean,
        std=bundle.std,
        crop_fraction=TRAINFLOW_CROP_FRACTION,
    )


def _imagenet_categories() -> list[str]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


def _load_torchvision(spec: str) -> LoadedModel:
    arch, _, weights_uri = spec[len(TORCHVISION_PREFIX) :].partition(":")
    if not arch or not weights_uri:
        raise ConfigError(
            "--model", spec, "torchvision:<arch>:<weights file>", "e.g. --model torchvision:resnet18:resnet18.pth"
        )
    data = read_required(weights_uri, "weights file")
    classes = sidecar_classes(weights_uri) or _imagenet_categories()
    module = build_architecture(arch, len(classes))
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except pickle.UnpicklingError as err:
        raise not_tensors("weights file", weights_uri) from err
    except (RuntimeError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as err:
        # An empty or truncated file raises a bare EOFError: say what the file is instead.
        detail = str(err).splitlines()[0][:160] if str(err).strip() else f"the {len(data)}-byte file ends early"
        raise ConfigError(
            "weights file",
            weights_uri,
            f"a state_dict for torchvision {arch} with {len(classes)} outputs",
            f"pass weights saved with torch.save(model.state_dict()) for this architecture ({detail})",
        ) from err
    return LoadedModel(module.eval(), spec, "torchvision", arch, classes, DEFAULT_INPUT_SIZE)


def load_model(spec: str) -> LoadedModel:
    """Load ``spec`` (anything but ``latest``) on the CPU; ConfigError for anything unusable."""
    if spec.startswith(TORCHVISION_PREFIX):
        loaded = _load_torchvision(spec)
    else:
        if not is_s3(spec) and "://" in spec:
            raise ConfigError("--model", spec, MODEL_FORMS, "use a local path or s3:// URI")
        data = read_required(spec, "--model")
        loaded = _load_torchscript(spec, data) if _is_torchscript(data) else _load_bundle(spec, data)
    if loaded.input_size < 1:
        raise ConfigError(
            "model input size", loaded.input_size, "a positive number of pixels", f"fix the metadata of {spec}"
        )
    return loaded
