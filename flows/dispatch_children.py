"""The flows DispatchFlow runs per manifest row, and the check of a row's parameters against the
child flow's own ``Parameter``s (names and types), so a bad row fails in start, in one line."""

import importlib
from pathlib import Path
from typing import Any

from metaflow import Config, Parameter
from metaflow._vendor import click  # the click Metaflow parameters are typed with

from steps.dispatch.manifest import ManifestRow
from steps.errors import ConfigError
from steps.inference.summary import InferenceStats
from steps.stats.summary import FlowStats

FLOWS = {"preprocess": "PreprocessFlow", "train": "TrainFlow", "infer": "InferFlow"}
# The sharded flows: their runs' summaries are RunSummary (with these FlowStats) and add up.
SHARDED: dict[str, type[FlowStats]] = {"preprocess": FlowStats, "infer": InferenceStats}
COLUMNS = frozenset({"input", "output"})  # every child's parameters that the manifest's columns give


def flow_file(flow: str) -> str:
    return str(Path(__file__).resolve().parent / f"{flow}.py")


def child_parameters(flow: str) -> dict[str, Parameter]:
    """The child flow's run parameters by their keyword name (``--batch-size`` → ``batch_size``)."""
    flow_class = getattr(importlib.import_module(flow), FLOWS[flow])
    found = {}
    for klass in flow_class.__mro__:
        for value in vars(klass).values():
            if isinstance(value, Parameter) and not isinstance(value, Config):
                found.setdefault(value.name.replace("-", "_"), value)
    return found


def row_arguments(flow: str, row: ManifestRow, parameters: dict[str, Parameter]) -> dict[str, Any]:
    """The row's ``name=value`` pairs as the child's typed keyword arguments for ``Runner.run``."""
    where = f"--manifest line {row.line}"
    arguments = {}
    for name, value in row.parameters:
        if name in COLUMNS or name not in parameters:
            known = ", ".join(sorted(set(parameters) - COLUMNS))
            raise ConfigError(
                where, name, f"a parameter of {FLOWS[flow]} ({known})", "fix the name; input and output are columns"
            )
        arguments[name] = _converted(value, parameters[name], f"{where} {name}")
    return arguments


def _converted(value: str, parameter: Parameter, where: str) -> Any:
    # ``init`` is what Metaflow runs on every Parameter before building a flow's command line: it
    # settles the declared type (or the default's) in ``kwargs``. Config-valued defaults stay
    # unresolved here (ignore_errors): only the child's own run reads its config.
    parameter.init(ignore_errors=True)
    kind = parameter.kwargs.get("type") or str
    try:
        if isinstance(kind, click.ParamType):
            return kind.convert(value, None, None)
        if kind is bool:
            return {"true": True, "false": False}[value.lower()]
        return kind(value)
    except (ValueError, KeyError, click.BadParameter):
        name = getattr(kind, "__name__", getattr(kind, "name", str(kind)))
        raise ConfigError(where, value, f"a value of type {name}", f"fix the value of {parameter.name}") from None
