"""One image through the Pillow path to its manifest row: read, preprocess, write both outputs.

The row helpers are shared with the device path (``steps.preprocess.device``), so a reject reads
the same on either.
"""

from __future__ import annotations

import time

from steps.errors import RejectedInput
from steps.io.storage import Storage, read_input
from steps.output.layout import edges_key, resized_key
from steps.preprocess.image import preprocess_image


def result_row(key: str, started: float, **fields: object) -> dict:
    """A manifest row; ``milliseconds`` counts from ``started`` (time.perf_counter) to now."""
    row = {"key": key, "status": "ok", "reason": "", "input_bytes": 0, "width": 0, "height": 0, **fields}
    row["milliseconds"] = (time.perf_counter() - started) * 1000
    return row


def rejected_row(key: str, reason: str, started: float, input_bytes: int = 0) -> dict:
    return result_row(key, started, status="rejected", reason=reason, input_bytes=input_bytes)


def taken_reason(key: str, owner: str) -> str:
    return f"output name {resized_key(key)} is taken by {owner}; rename one of the two"


def write_outputs(target: Storage, key: str, resized_jpeg: bytes, edges_png: bytes) -> None:
    target.write(resized_key(key), resized_jpeg)
    target.write(edges_key(key), edges_png)


def preprocess_data(target: Storage, key: str, data: bytes, size: int, started: float) -> dict:
    """The Pillow path for one image already read: write its outputs, return its row."""
    try:
        result = preprocess_image(data, size)
    except RejectedInput as err:
        return rejected_row(key, str(err), started, len(data))
    write_outputs(target, key, result.resized_jpeg, result.edges_png)
    return result_row(key, started, input_bytes=len(data), width=result.width, height=result.height)


def preprocess_one(source: Storage, target: Storage, key: str, size: int, taken_by: str | None = None) -> dict:
    started = time.perf_counter()
    if taken_by:
        return rejected_row(key, taken_reason(key, taken_by), started)
    try:
        data = read_input(source, key)
    except RejectedInput as err:
        return rejected_row(key, str(err), started)
    return preprocess_data(target, key, data, size, started)
