"""Checks of locations and values that every flow runs in ``start``, before any fan-out.

Each failure is one ``ConfigError`` line: the value, what was expected and how to fix it.
"""

from __future__ import annotations

import difflib
import os
import uuid
from collections.abc import Iterable

from steps.errors import ConfigError
from steps.io.s3_storage import S3Storage
from steps.io.storage import Storage, is_s3, open_storage
from steps.output.layout import PROBE_DIR


def check_input(uri: str) -> Storage:
    if not uri:
        raise ConfigError("--input", uri, "a directory or s3://bucket/prefix of images", "pass --input")
    if not is_s3(uri) and not os.path.isdir(uri):
        raise ConfigError(
            "--input",
            uri,
            "an existing directory of images",
            "check the path, or create sample data with `spot-batch sample-data DIR`",
        )
    storage = open_storage(uri)
    if isinstance(storage, S3Storage):
        storage.check_bucket()
    return storage


def check_output(uri: str) -> Storage:
    """Open the output location and prove it is writable with a probe write."""
    if not uri:
        raise ConfigError("--output", uri, "a directory or s3://bucket/prefix", "pass --output")
    storage = open_storage(uri)
    if isinstance(storage, S3Storage):
        storage.check_bucket()
    probe = f"{PROBE_DIR}/{uuid.uuid4().hex}"
    try:
        storage.write(probe, b"")
        storage.delete(probe)
    except OSError as err:
        raise ConfigError(
            "--output", uri, "a writable location", f"fix permissions or choose another path ({err})"
        ) from err
    return storage


def check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(name, value, "a positive integer", f"pass {name} with a value of 1 or more")


def check_names(what: str, names: Iterable[str], valid: Iterable[str], expected: str, flag: str) -> None:
    """Raise ConfigError for the first unknown name, suggesting the closest valid ones."""
    known = sorted(set(valid))
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else f"choose from {', '.join(known)}"
            raise ConfigError(what, name, expected, f"{hint} (fix {flag})")
