"""Storage on a local directory: atomic writes (a temporary file and a rename), and conditional writes
serialised by an ``flock`` on ``<key>.lock``, a version being the sha256 of the bytes."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from steps.io.listing import ObjectInfo, local_pages

_TEMP_PREFIX = ".tmp-"


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

    def read_view(self, key: str) -> memoryview:
        return memoryview(self.read(key))  # a file is read into memory once either way

    def write(self, key: str, data: bytes) -> None:
        """Write ``key`` whole or not at all: a temporary file beside it, then a rename. The
        temporary name is the key's own, so a write that a SIGKILL cut short leaves a file that
        the retry's write of the same key truncates and renames (no leftovers)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(_TEMP_PREFIX + path.name)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
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
