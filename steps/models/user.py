"""The user's own model: ``--model python:<file.py | s3://.../file.py | module>:<factory>``.

The file never imports this project. ``factory(device)`` returns the model: a callable
``model(pixels, meta) -> {name: tensor or list}`` (see ``steps.models.callable_model``) with
optional attributes ``input_size`` (224), ``resize`` ("crop", "pad" or "stretch"; "crop"),
``crop_fraction`` (1.0: the whole centred square) and ``mean``/``std`` (both or neither; without
them pixels are 0..1). An ``s3://`` file is downloaded next to the task; a module must be
importable in the task (installed in its image).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from steps.errors import ConfigError, UserCodeError
from steps.imaging.placement import RESIZE_MODES
from steps.io.storage import is_s3, open_storage
from steps.models.callable_model import NO_NORMALIZATION, CallableModel, ModelFunction

PYTHON_PREFIX = "python:"

PYTHON_FORM = "python:<file.py, s3://.../file.py or module>:<factory>"


def _module_from_file(spec: str, location: str) -> ModuleType:
    if is_s3(location):
        root, _, name = location.rpartition("/")
        storage = open_storage(root)
        if not storage.exists(name):
            raise ConfigError("--model", spec, "an existing s3:// object holding the model file", "check the path")
        local = Path(tempfile.mkdtemp(prefix="spot-batch-model-")) / name
        local.write_bytes(storage.read(name))
    else:
        local = Path(location)
        if not local.is_file():
            raise ConfigError("--model", spec, f"an existing Python file at {location}", "check the path (absolute?)")
    # One module name per file: two models with the same file name do not replace each other.
    name = f"spot_batch_user_{local.stem}_{hashlib.sha1(location.encode()).hexdigest()[:8]}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    found = importlib.util.spec_from_file_location(name, local)
    if found is None or found.loader is None:
        raise ConfigError("--model", spec, "a .py file Python can import", f"rename {local.name} to end in .py")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        found.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise _failed(spec, "importing the file", err) from err
    return module


def _failed(spec: str, doing: str, err: Exception) -> ConfigError:
    detail = (str(err).splitlines() or [""])[0][:200]
    return ConfigError("--model", spec, f"{doing} to work", f"it raised {type(err).__name__}: {detail}")


def _attribute(
    spec: str, model: object, name: str, *, default: Any, check: Callable[[Any], bool], expected: str
) -> Any:
    value = getattr(model, name, default)
    if not check(value):
        raise ConfigError(f"{name} of --model", spec, expected, f"got {value!r}; fix the attribute in the model class")
    return value


def _triple(value: object) -> bool:
    return isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value)


def load_user_model(spec: str, device: torch.device | None = None) -> CallableModel:
    """Import ``spec``'s file or module, build the model on ``device`` (CPU by default) and read
    its input settings; ConfigError in one line for anything wrong."""
    location, _, factory_name = spec[len(PYTHON_PREFIX) :].rpartition(":")
    if not location or not factory_name.isidentifier():
        raise ConfigError("--model", spec, PYTHON_FORM, "e.g. --model python:/abs/path/my_model.py:build")
    if location.endswith(".py") or is_s3(location):
        module = _module_from_file(spec, location)
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as err:
            raise _failed(spec, f"importing module {location}", err) from err
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ConfigError("--model", spec, f"a function {factory_name}(device) in {location}", "check the name")

    device = device or torch.device("cpu")
    try:
        built = factory(device)
    except Exception as err:
        raise _failed(spec, f"{factory_name}(device)", err) from err
    ready = {str(device): built}  # built once per device: the settings' build serves its device's lane

    def build(on: torch.device) -> ModelFunction:
        if str(on) not in ready:
            try:
                ready[str(on)] = factory(on)
            except Exception as err:
                raise UserCodeError(f"{spec}: {factory_name}({on}) raised {type(err).__name__}: {err}") from err
        return ready[str(on)]

    if not callable(built):
        raise ConfigError("--model", spec, f"{factory_name}(device) to return a callable model", "add __call__")
    size = _attribute(
        spec, built, "input_size", default=224, check=lambda v: isinstance(v, int) and v > 0, expected="a positive int"
    )
    resize = _attribute(
        spec, built, "resize", default="crop", check=lambda v: v in RESIZE_MODES, expected=f"one of {RESIZE_MODES}"
    )
    fraction = _attribute(
        spec,
        built,
        "crop_fraction",
        default=1.0,
        check=lambda v: isinstance(v, int | float) and 0 < v <= 1,
        expected="a number in (0, 1]",
    )
    mean = _attribute(
        spec, built, "mean", default=None, check=lambda v: v is None or _triple(v), expected="3 numbers (R, G, B)"
    )
    std = _attribute(
        spec, built, "std", default=None, check=lambda v: v is None or (_triple(v) and all(v)), expected="3 non-zeros"
    )
    if (mean is None) != (std is None):
        raise ConfigError("mean and std of --model", spec, "both or neither", "set the missing one")
    return CallableModel(
        uri=spec,
        kind="python",
        architecture=type(built).__name__,
        build=build,
        input_size=size,
        resize=resize,
        crop_fraction=float(fraction),
        mean=tuple(float(v) for v in mean) if mean else NO_NORMALIZATION[0],
        std=tuple(float(v) for v in std) if std else NO_NORMALIZATION[1],
    )
