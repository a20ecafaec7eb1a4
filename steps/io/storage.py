"""Where inputs and outputs live: local directories and s3:// prefixes behind one small interface.

Writes are atomic: a local write is a temporary file and a rename; an S3 PUT is already atomic (the
object appears whole or not at all). Conditional writes (``create``, ``replace``, ``delete_version``)
let a small record be shared by runs that race for it (``steps.output.lease``): on S3 they are
``If-None-Match: *`` and ``If-Match: <ETag>`` requests; locally an ``flock`` on ``<key>.lock``
serialises each read-then-write, and a version is the sha256 of the bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from steps.errors import ConfigError, RejectedInput
from steps.io.listing import ObjectInfo, local_pages, s3_pages
from steps.io.object_reader import object_reader

_TEMP_PREFIX = ".tmp-"


class Storage(Protocol):
    """What every backend offers. ``uri`` is the root, e.g. ``/data/out`` or ``s3://b/out``.

    ``list`` returns every object sorted by key; ``pages`` yields them in batches in no particular
    order, listed in parallel, for listings too large to hold (``steps.io.listing``).
    """

    uri: str

    def list(self, prefix: str = "") -> list[ObjectInfo]: ...
    def pages(self, prefix: str = "") -> Iterator[list[ObjectInfo]]: ...
    def read(self, key: str) -> bytes: ...
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


class UnreadableEntry(OSError):
    """A local directory entry that is no readable regular file; its message is the reason."""


class LocalStorage:
    def __init__(self, root: str | os.PathLike[str], threads: int = 4) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)
        self.threads = threads  # directories scanned at once

    def _path(self, key: str) -> Path:
        return self.root / key

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return sorted((o for page in self.pages(prefix) for o in page), key=lambda o: o.key)

    def pages(self, prefix: str = "") -> Iterator[list[ObjectInfo]]:
        return local_pages(self.root, prefix, lambda name: name.startswith(_TEMP_PREFIX), self.threads)

    def read(self, key: str) -> bytes:
        """The object's bytes; an entry that is not a readable regular file raises ``OSError``
        with the reason (``UnreadableEntry`` for loops, directories and special files), and a
        FIFO is never waited on."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise UnreadableEntry("a symlink loop") from err
            if err.errno == errno.ENOENT and self._path(key).is_symlink():
                raise UnreadableEntry("a dangling symlink") from err
            raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            if stat.S_ISDIR(mode):
                raise UnreadableEntry("a directory (or a symlink to one)")
            raise UnreadableEntry("not a regular file (a FIFO, socket or device)")
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[tuple[bytes, str] | None]:
        """Hold ``<key>.lock`` exclusively (other processes' conditional writes wait) and give the
        key's current bytes and version."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.with_name(path.name + ".lock").open("a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                yield None
            else:
                yield data, hashlib.sha256(data).hexdigest()

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist."""
        with self._locked(key) as current:
            if current is not None:
                return False
            self.write(key, data)
            return True

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        with self._locked(key) as current:
            return current

    def replace(self, key: str, data: bytes, version: str) -> bool:
        """Overwrite ``key`` only if it still holds ``version``."""
        with self._locked(key) as current:
            if current is None or current[1] != version:
                return False
            self.write(key, data)
            return True

    def delete_version(self, key: str, version: str) -> bool:
        """Delete ``key`` only if it still holds ``version``."""
        with self._locked(key) as current:
            if current is None or current[1] != version:
                return False
            self.delete(key)
            return True


def s3_client(max_connections: int = 16, fail_fast: bool = False):
    """A boto3 S3 client for the configured endpoint, retrying throttling and 5xx with backoff.

    ``fail_fast`` is for optional lookups (e.g. a bucket's region) that must never stall a run.
    """
    import boto3
    import botocore.session
    from botocore.config import Config

    from steps.io.list_parser import FastListParserFactory

    if fail_fast:
        config = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 2, "mode": "standard"})
    else:
        config = Config(
            retries={"max_attempts": 8, "mode": "adaptive"},
            max_pool_connections=max_connections,
            connect_timeout=10,
            read_timeout=60,
        )
    endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or None
    session = botocore.session.get_session()
    session.register_component("response_parser_factory", FastListParserFactory())  # listing's CPU floor
    return boto3.session.Session(botocore_session=session).client("s3", endpoint_url=endpoint, config=config)


class S3Storage:
    def __init__(self, uri: str, max_connections: int = 16) -> None:
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError("S3 URI", uri, "s3://bucket[/prefix]", "add a bucket name")
        self.uri = uri.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.threads = max_connections  # key ranges listed at once
        self._client = s3_client(max_connections)
        self._reader = object_reader(bucket, self._client, max_connections)  # None: botocore reads

    def __getstate__(self) -> dict:
        """Pickled as its URI and pool size (for worker processes): clients are made anew there."""
        return {"uri": self.uri, "max_connections": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"], state["max_connections"])

    def _key(self, key: str) -> str:
        return self.prefix + key

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return sorted((o for page in self.pages(prefix) for o in page), key=lambda o: o.key)

    def pages(self, prefix: str = "") -> Iterator[list[ObjectInfo]]:
        return s3_pages(self._client, self.bucket, self.prefix, prefix, self.threads)

    def read(self, key: str) -> bytes:
        if self._reader is not None:
            return self._reader.read(self._key(key))
        return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def _conditional(self, call: Callable[..., object], key: str, **condition: object) -> bool:
        from botocore.exceptions import ClientError

        try:
            call(Bucket=self.bucket, Key=self._key(key), **condition)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 412: the condition failed; 409: a concurrent conditional write won; 404: gone meanwhile.
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (404, 409, 412):
                return False
            raise
        return True

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist (``If-None-Match: *``)."""
        return self._conditional(self._client.put_object, key, Body=data, IfNoneMatch="*")

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def replace(self, key: str, data: bytes, version: str) -> bool:
        """Overwrite ``key`` only if its ETag is still ``version`` (``If-Match``)."""
        return self._conditional(self._client.put_object, key, Body=data, IfMatch=version)

    def delete_version(self, key: str, version: str) -> bool:
        """Delete ``key`` only if its ETag is still ``version`` (``If-Match``)."""
        return self._conditional(self._client.delete_object, key, IfMatch=version)

    def check_bucket(self) -> None:
        """Raise ConfigError when the bucket is missing or unreachable with these credentials."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as err:
            raise ConfigError(
                "bucket",
                self.bucket,
                "an existing S3 bucket readable with the current AWS credentials",
                f"create it or fix the name/credentials/endpoint ({err})",
            ) from err


# Per-object failures that retrying cannot fix: report the object as a reject, go on.
_PERMANENT_S3_CODES = {"AccessDenied", "NoSuchKey", "404", "InvalidObjectState", "403"}


def read_input(storage: Storage, key: str) -> bytes:
    """Read one input object; a permanent per-object failure becomes RejectedInput.

    Transient failures (throttling, 5xx, resets) were already retried by the client; if they
    persist they propagate and fail the task, so Metaflow's @retry reschedules it.
    """
    from botocore.exceptions import ClientError

    try:
        return storage.read(key)
    except (FileNotFoundError, PermissionError, IsADirectoryError, UnreadableEntry) as err:
        raise RejectedInput(f"unreadable object: {err.strerror or err}") from err
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in _PERMANENT_S3_CODES:
            raise RejectedInput(f"unreadable object: S3 {code}") from err
        raise
