"""Typed Parquet columns from what a model returns: fixed by a probe in ``start``, checked per batch.

A model (``steps.models.callable_model``) returns ``{name: value}`` for a batch of N images:

* a [N] tensor → a scalar column (float32, int64 or bool);
* a [N, D] tensor → ``fixed_size_list<float32 or float16>[D]`` (float16 stays float16);
* a list of N items → one value per row: tensors of [k] → ``list<T>``, of [k, D] →
  ``list<fixed_size_list<T>[D]>``; lists of strings or numbers → ``list<string | float32 | int64>``;
  strings or numbers → a scalar column.

Every table also keeps ``key, status, reason``. What the probe saw is the promise: a later batch
that returns another shape or type is the model's bug (``UserCodeError``), named in one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import torch

from steps.errors import ConfigError, UserCodeError

BASE_FIELDS = [("key", pa.string()), ("status", pa.string()), ("reason", pa.string())]
SCALAR, VECTOR, LIST = "scalar", "vector", "list"
UNKNOWN = "unknown"  # a list column whose items were all empty in this batch: any type fits
ARROW_TYPES = {
    "float32": pa.float32(),
    "float16": pa.float16(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}


@dataclass(frozen=True)
class OutputColumn:
    name: str
    shape: str  # SCALAR, VECTOR or LIST
    dtype: str  # a key of ARROW_TYPES
    width: int = 0  # D of a vector, or of each [k, D] list item; 0 otherwise

    @property
    def arrow_type(self) -> pa.DataType:
        value = ARROW_TYPES[self.dtype]
        if self.shape == SCALAR:
            return value
        if self.shape == VECTOR:
            return pa.list_(value, self.width)
        return pa.list_(pa.list_(value, self.width) if self.width else value)

    def to_dict(self) -> dict:
        return asdict(self)


class WrongOutput(Exception):
    def __init__(self, name: str, expected: str, got: str) -> None:
        super().__init__(name, expected, got)
        self.name, self.expected, self.got = name, expected, got


def _tensor_dtype(value: np.ndarray | torch.Tensor, name: str, keep_half: bool) -> str:
    """float16 (vectors only), float32 (any other float), int64 or bool."""
    if isinstance(value, torch.Tensor):
        dtype = value.dtype
        kind = "b" if dtype == torch.bool else "c" if dtype.is_complex else "f" if dtype.is_floating_point else "i"
        half = dtype == torch.float16
    else:
        kind, half = value.dtype.kind, value.dtype == np.float16
    if kind == "b":
        return "bool"
    if kind == "f":
        return "float16" if half and keep_half else "float32"
    if kind in "iu":
        return "int64"
    raise WrongOutput(name, "real, integer or bool values", f"dtype {value.dtype}")


def _shape(value: torch.Tensor | np.ndarray) -> str:
    return "[" + ", ".join(str(d) for d in value.shape) + "]"


def _is_array(value: object) -> bool:
    return isinstance(value, torch.Tensor | np.ndarray)


def _python_dtype(values: Sequence, name: str) -> str:
    if not values:
        return UNKNOWN
    if all(isinstance(v, str) for v in values):
        return "string"
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "float32"
    raise WrongOutput(name, "items all strings or all numbers", f"{sorted({type(v).__name__ for v in values})}")


def _list_column(name: str, items: Sequence) -> OutputColumn:
    if all(_is_array(i) for i in items):
        ranks = {i.ndim for i in items}
        widths = {i.shape[1] for i in items if i.ndim == 2}
        if len(ranks) > 1 or ranks - {0, 1, 2} or len(widths) > 1:
            shapes = sorted({_shape(i) for i in items})[:4]
            raise WrongOutput(name, "one tensor per image, all [k] or all [k, D] with the same D", f"{shapes}")
        rank = ranks.pop() if ranks else 1
        dtypes = {_tensor_dtype(i, name, keep_half=False) for i in items}
        if len(dtypes) > 1:
            raise WrongOutput(name, "per-image tensors of one dtype", f"{sorted(dtypes)}")
        dtype = dtypes.pop() if dtypes else UNKNOWN
        return OutputColumn(name, SCALAR if rank == 0 else LIST, dtype, widths.pop() if widths else 0)
    if all(isinstance(i, list | tuple) for i in items):
        return OutputColumn(name, LIST, _python_dtype([v for i in items for v in i], name))
    if any(isinstance(i, list | tuple) or _is_array(i) for i in items):
        raise WrongOutput(name, "items of one kind (all tensors, all lists or all plain values)", "a mix")
    return OutputColumn(name, SCALAR, _python_dtype(items, name))


def column_of(name: str, value: object, n: int) -> OutputColumn:
    """The column ``value`` makes for a batch of ``n`` images; WrongOutput if it makes none."""
    expected = f"a [N] or [N, D] tensor or a list of N items, N = {n} images in the batch"
    if _is_array(value):
        if value.ndim not in (1, 2) or value.shape[0] != n:
            hint = "; flatten it to [N, D] or return a list of N tensors" if value.ndim > 2 else ""
            raise WrongOutput(name, expected, f"a tensor of shape {_shape(value)}{hint}")
        dtype = _tensor_dtype(value, name, keep_half=value.ndim == 2)
        return (
            OutputColumn(name, SCALAR, dtype) if value.ndim == 1 else OutputColumn(name, VECTOR, dtype, value.shape[1])
        )
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise WrongOutput(name, expected, f"a list of {len(value)} items")
        return _list_column(name, value)
    raise WrongOutput(name, expected, f"a {type(value).__name__}")


def _named_outputs(outputs: object, names: Sequence[str] | None) -> Mapping[str, object]:
    if not isinstance(outputs, Mapping) or not outputs or not all(isinstance(k, str) for k in outputs):
        got = type(outputs).__name__ + (" (empty)" if isinstance(outputs, Mapping) and not outputs else "")
        raise WrongOutput("(all)", "a dict {output name: tensor or list}", got)
    reserved = sorted(set(outputs) & {name for name, _ in BASE_FIELDS})
    if reserved:
        raise WrongOutput(reserved[0], "a name other than key, status, reason (every table has those)", "a clash")
    if names is not None and list(outputs) != list(names):
        raise WrongOutput("(all)", f"the outputs the probe returned, {list(names)}", f"{list(outputs)}")
    return outputs


def probe_columns(outputs: object, n: int, spec: str) -> list[OutputColumn]:
    """The columns of a model's probe outputs (blank batch of ``n``), or ConfigError in one line."""
    try:
        columns = [column_of(name, value, n) for name, value in _named_outputs(outputs, None).items()]
    except WrongOutput as wrong:
        raise ConfigError(f"output {wrong.name!r} of --model", spec, wrong.expected, f"got {wrong.got}") from None
    unknown = [c.name for c in columns if c.dtype == UNKNOWN]
    if unknown:
        raise ConfigError(
            f"output {unknown[0]!r} of --model",
            spec,
            "items whose type shows on a blank image",
            "got only empty lists; return one tensor per image (its dtype sets the column type)",
        )
    return columns


def schema_of(columns: Sequence[OutputColumn]) -> pa.Schema:
    return pa.schema([*BASE_FIELDS, *[(c.name, c.arrow_type) for c in columns]])


def _numpy(value: torch.Tensor | np.ndarray, dtype: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        value = (value.float() if value.dtype == torch.bfloat16 else value).cpu().numpy()
    return value.astype(dtype, copy=False)


def _flat(values: np.ndarray, column: OutputColumn) -> pa.Array:
    flat = pa.array(values.reshape(-1), type=ARROW_TYPES[column.dtype])
    return pa.FixedSizeListArray.from_arrays(flat, column.width) if column.width else flat


def _array(value: object, column: OutputColumn) -> pa.Array:
    if column.shape == SCALAR:
        if _is_array(value):
            return pa.array(_numpy(value, column.dtype), type=column.arrow_type)
        items = [_numpy(v, column.dtype).item() if _is_array(v) else v for v in value]
        return pa.array(items, type=column.arrow_type)
    if column.shape == VECTOR:
        return _flat(_numpy(value, column.dtype), column)
    if value and _is_array(value[0]):
        arrays = [_numpy(v, column.dtype) for v in value]
        offsets = np.zeros(len(arrays) + 1, np.int32)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        values = np.concatenate(arrays) if arrays else np.zeros((0,), column.dtype)
        return pa.ListArray.from_arrays(pa.array(offsets), _flat(values, column))
    return pa.array([list(v) for v in value], type=column.arrow_type)


def _family(dtype: str) -> str:
    """float16 and float32 are one: the probe runs in fp32 on the CPU, a T4's autocast returns fp16."""
    return "float" if dtype in ("float16", "float32") else dtype


def batch_table(
    outputs: object, columns: Sequence[OutputColumn], keys: Sequence[str], schema: pa.Schema, spec: str
) -> pa.Table:
    """One batch's rows; UserCodeError naming the output if it breaks the probe's promise."""
    n = len(keys)
    try:
        named = _named_outputs(outputs, [c.name for c in columns])
        for column in columns:
            seen = column_of(column.name, named[column.name], n)
            same_type = _family(seen.dtype) in (_family(column.dtype), UNKNOWN)
            if (seen.shape, seen.width) != (column.shape, column.width) or not same_type:
                raise WrongOutput(column.name, f"{column.arrow_type} as on the probe", f"{seen.arrow_type}")
    except WrongOutput as wrong:
        raise UserCodeError(
            f"output {wrong.name!r} of --model {spec!r}: expected {wrong.expected}; got {wrong.got}"
        ) from None
    arrays = [pa.array(keys, pa.string()), pa.array(["ok"] * n, pa.string()), pa.array([""] * n, pa.string())]
    return pa.Table.from_arrays([*arrays, *[_array(named[c.name], c) for c in columns]], schema=schema)


def rejected_table(keys: Sequence[str], reasons: Sequence[str], schema: pa.Schema) -> pa.Table:
    n = len(keys)
    arrays = [pa.array(keys, pa.string()), pa.array(["rejected"] * n, pa.string()), pa.array(reasons, pa.string())]
    return pa.Table.from_arrays([*arrays, *[pa.nulls(n, f.type) for f in list(schema)[3:]]], schema=schema)
