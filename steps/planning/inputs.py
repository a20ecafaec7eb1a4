"""The input keys of a run: every object under the input location except metadata files."""

from __future__ import annotations

from collections.abc import Iterator

from steps.io.listing import ObjectInfo
from steps.io.storage import Storage
from steps.output.layout import METADATA_NAMES


def input_pages(storage: Storage) -> Iterator[list[ObjectInfo]]:
    """The input objects in batches, in no particular order, listed in parallel."""
    for page in storage.pages():
        yield [o for o in page if o.key not in METADATA_NAMES]


def list_input_objects(storage: Storage) -> list[ObjectInfo]:
    """Every object under the input root except known metadata files, sorted by key."""
    return [o for o in storage.list() if o.key not in METADATA_NAMES]


def list_inputs(storage: Storage) -> list[str]:
    return [o.key for o in list_input_objects(storage)]
