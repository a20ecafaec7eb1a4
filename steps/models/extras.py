"""The optional packages some ``--model`` forms need: imported when used, else a one-line ConfigError."""

from __future__ import annotations

import importlib
from types import ModuleType

from steps.errors import ConfigError


def import_extra(spec: str, package: str, extra: str) -> ModuleType:
    """``package``, or a ConfigError naming ``spec`` and the pyproject extra that installs it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ConfigError("--model", spec, f"the {package} package", f"pip install 'spot-batch[{extra}]'") from err
