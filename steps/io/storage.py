"""Where inputs and outputs live: local directories and s3:// prefixes behind one small interface.

Writes are atomic: a local write is a temporary file and a rename; an S3 PUT is already atomic (the
object appears whole or not at all). Conditional writes (``create``, ``replace``, ``delete_version``)
let a small record be shared by runs that race for it (``steps.output.lease``): on S3 they are
``If-None-Match: *`` and ``If-Match: <ETag>`` requests; locally an ``flock`` on ``<key>.lock``
serialises each read-then-write, and a version is the sha256 of the bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

from steps.errors import RejectedInput
from steps.io.listing import ObjectInfo
from steps.io.local_storage import LocalStorage, UnreadableEntry
from steps.io.s3_storage import S3Storage

T = TypeVar("T")


class Storage(Protocol):
    """What every backend offers. ``uri`` is the root, e.g. ``/data/out`` or ``s3://b/out``.

    ``list`` returns every object sorted by key; ``pages`` yields them in batches in no particular
    order, listed in parallel, for listings too large to hold (``steps.io.listing``).
    """

    uri: str

    def list(self, prefix: str = "") -> list[ObjectInfo]: ...
    def pages(self, prefix: str = "") -> Iterator[list[ObjectInfo]]: ...
    def read(self, key: str) -> bytes: ...
    # The same bytes without a copy where the client can lend them (an S3 body as received): for
    # objects read whole and sliced, such as tars, where copying 50 MB costs as much as receiving it.
    def read_view(self, key: str) -> memoryview: ...
    def write(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    # Conditional writes: ``version`` is what ``read_versioned`` returned; False when the condition failed.
    def create(self, key: str, data: bytes) -> bool: ...
    def read_versioned(self, key: str) -> tuple[bytes, str] | None: ...
    def replace(self, key: str, data: bytes, version: str) -> bool: ...
    def delete_version(self, key: str, version: str) -> bool: ...


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join_uri(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or s3:// URI."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])


def open_storage(uri: str, threads: int = 16) -> Storage:
    """Storage rooted at ``uri`` (a local directory or ``s3://bucket[/prefix]``)."""
    if is_s3(uri):
        return S3Storage(uri, max_connections=threads)
    return LocalStorage(uri, threads=min(threads, 8))


# Per-object failures that retrying cannot fix: report the object as a reject, go on.
_PERMANENT_S3_CODES = {"AccessDenied", "NoSuchKey", "404", "InvalidObjectState", "403"}


def read_input(storage: Storage, key: str) -> bytes:
    """Read one input object; a permanent per-object failure becomes RejectedInput.

    Transient failures (throttling, 5xx, resets) were already retried by the client; if they
    persist they propagate and fail the task, so Metaflow's @retry reschedules it.
    """
    return _input(storage.read, key)


def read_input_view(storage: Storage, key: str) -> memoryview:
    """``read_input`` through ``Storage.read_view``: the bytes lent, not copied."""
    return _input(storage.read_view, key)


def _input(read: Callable[[str], T], key: str) -> T:
    from botocore.exceptions import ClientError

    try:
        return read(key)
    except (FileNotFoundError, PermissionError, IsADirectoryError, UnreadableEntry) as err:
        raise RejectedInput(f"unreadable object: {err.strerror or err}") from err
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in _PERMANENT_S3_CODES:
            raise RejectedInput(f"unreadable object: S3 {code}") from err
        raise
