"""One writer per output: a lease on the output location, taken in ``start``, renewed by shard
tasks while they run, released by ``end``.

The lease is one small JSON record at ``_lease.json`` naming its holder (run, host, driver pid,
since, last heartbeat, expiry). Taking it is a create-if-absent: on S3 a conditional PutObject
(``If-None-Match: *``); locally an exclusive create, with a ``flock`` around every read-then-write
so two processes never interleave. Renewing and taking over a dead run's lease replace the record
only if it is still the one read (S3 ``If-Match`` on its ETag). A holder counts as dead when its
record expired (no heartbeat for ``LEASE_TTL_S``) or when it ran on this host and its driver
process is gone (a killed local run, rerun at once). Otherwise a second run is refused in
``start`` with one line naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from steps.errors import ConfigError, SpotInterruption
from steps.io.storage import LocalStorage, S3Storage, Storage, s3_client
from steps.output.layout import LEASE_KEY
from steps.progress import log

LEASE_TTL_S = 1800.0  # no heartbeat for this long: the holder is presumed dead (covers queue waits)
HEARTBEAT_S = 60.0
_ATTEMPTS = 8  # conditional writes lost to a concurrent renewal of the same lease are retried


class LeaseLost(ConfigError):
    """This run's lease on its output was taken over by another run: stop writing there.

    A ConfigError, so never retried (even when raised while a SpotInterruption unwinds)."""

    def __init__(self, uri: str, holder: str) -> None:
        super().__init__(
            "--output", uri, "an output this run holds the lease of", f"{holder} holds it now; this run stops writing"
        )


@dataclass(frozen=True)
class Holder:
    run: str  # e.g. PreprocessFlow/1796120081186632
    host: str
    pid: int  # the run's driver process (a local task's parent)
    since: float
    heartbeat: float
    expires: float
    token: str  # unique per lease taken: renewals and release check it

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.run} on {self.host} (pid {self.pid}) since {since}"

    def dead(self, now: float) -> str:
        """Why this holder no longer counts, or empty while it does."""
        if now > self.expires:
            return f"no heartbeat for {now - self.heartbeat:.0f} s"
        if self.host == socket.gethostname() and not _alive(self.pid):
            return f"its driver process {self.pid} on this host is gone"
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _encode(holder: Holder) -> bytes:
    return json.dumps(asdict(holder), sort_keys=True).encode()


class LeaseStore(Protocol):
    """Conditional operations on the one lease record; ``version`` is what ``read`` returned."""

    def create(self, data: bytes) -> bool: ...
    def read(self) -> tuple[bytes, str] | None: ...
    def replace(self, data: bytes, version: str) -> bool: ...
    def delete(self, version: str) -> bool: ...


class LocalLeaseStore:
    def __init__(self, root: Path) -> None:
        self.path = root / LEASE_KEY
        self.guard = root / f"{LEASE_KEY}.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.guard.open("a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            yield

    def _current(self) -> tuple[bytes, str] | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def create(self, data: bytes) -> bool:
        with self._locked():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True

    def read(self) -> tuple[bytes, str] | None:
        with self._locked():
            return self._current()

    def replace(self, data: bytes, version: str) -> bool:
        with self._locked():
            current = self._current()
            if current is None or current[1] != version:
                return False
            temporary = self.path.with_name(f".tmp-{uuid.uuid4().hex}")
            temporary.write_bytes(data)
            os.replace(temporary, self.path)
            return True

    def delete(self, version: str) -> bool:
        with self._locked():
            current = self._current()
            if current is None or current[1] != version:
                return False
            self.path.unlink()
            return True


class S3LeaseStore:
    def __init__(self, storage: S3Storage) -> None:
        self.bucket, self.key = storage.bucket, storage.prefix + LEASE_KEY
        self.client = s3_client()

    def _conditional(self, call, **kwargs) -> bool:
        from botocore.exceptions import ClientError

        try:
            call(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 412: the condition failed; 409: a concurrent conditional write won; 404: gone meanwhile.
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (404, 409, 412):
                return False
            raise
        return True

    def create(self, data: bytes) -> bool:
        return self._conditional(self.client.put_object, Body=data, IfNoneMatch="*")

    def read(self) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def replace(self, data: bytes, version: str) -> bool:
        return self._conditional(self.client.put_object, Body=data, IfMatch=version)

    def delete(self, version: str) -> bool:
        return self._conditional(self.client.delete_object, IfMatch=version)


def lease_store(storage: Storage) -> LeaseStore:
    if isinstance(storage, S3Storage):
        return S3LeaseStore(storage)
    if isinstance(storage, LocalStorage):
        return LocalLeaseStore(storage.root)
    raise TypeError(f"no lease support for {type(storage).__name__}")


def _read(store: LeaseStore) -> tuple[Holder, str] | None:
    current = store.read()
    return None if current is None else (Holder(**json.loads(current[0])), current[1])


def acquire(storage: Storage, run: str, ttl_s: float = LEASE_TTL_S) -> Holder:
    """Take the output's lease for ``run``; ConfigError naming the holder while a live run has it."""
    store, now = lease_store(storage), time.time()
    mine = Holder(run, socket.gethostname(), os.getppid(), now, now, now + ttl_s, uuid.uuid4().hex)
    for _ in range(_ATTEMPTS):
        if store.create(_encode(mine)):
            return mine
        current = _read(store)
        if current is None:
            continue  # released meanwhile
        holder, version = current
        if holder.token == mine.token:
            return mine  # our create succeeded but its response was lost, and the retry found it
        why = holder.dead(time.time())
        if not why:
            raise ConfigError(
                "--output",
                storage.uri,
                "an output no other run is writing",
                f"{holder.describe()} holds its lease; wait for that run to finish (or for its lease to expire "
                f"{LEASE_TTL_S / 60:.0f} min after its last heartbeat), or choose another --output",
            )
        if store.replace(_encode(mine), version):
            log(f"took over the lease on {storage.uri} from {holder.describe()}: {why}")
            return mine
    raise ConfigError("--output", storage.uri, "a lease that can be taken", "other runs keep racing for it; retry")


def renew(storage: Storage, token: str, ttl_s: float = LEASE_TTL_S) -> None:
    """Heartbeat the lease held with ``token``; LeaseLost if another run holds it now."""
    store = lease_store(storage)
    for _ in range(_ATTEMPTS):
        current = _read(store)
        if current is None or current[0].token != token:
            raise LeaseLost(storage.uri, "nobody" if current is None else current[0].describe())
        holder, version = current
        now = time.time()
        renewed = replace(holder, host=socket.gethostname(), pid=os.getppid(), heartbeat=now, expires=now + ttl_s)
        if store.replace(_encode(renewed), version):
            return
    raise LeaseLost(storage.uri, "a run racing this one for it")


def release(storage: Storage, token: str) -> None:
    """Give the lease up if this run (``token``) still holds it."""
    store = lease_store(storage)
    for _ in range(_ATTEMPTS):
        current = _read(store)
        if current is None or current[0].token != token:
            return
        if store.delete(current[1]):
            return


@contextlib.contextmanager
def heartbeat(storage: Storage, token: str, stop: threading.Event, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Renew the lease every ``every_s`` while the block runs; on loss set ``stop`` (the shard ends
    after its chunk in flight) and raise LeaseLost when the block ends."""
    renew(storage, token)
    lost: list[LeaseLost] = []
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            try:
                renew(storage, token)
            except LeaseLost as err:
                lost.append(err)
                stop.set()
                return
            except Exception as err:  # noqa: BLE001 - a failed heartbeat (503, reset) is retried at the next beat
                log(f"lease heartbeat failed, retrying in {every_s:.0f} s: {err.__class__.__name__}: {err}")

    thread = threading.Thread(target=beat, name="spot-batch-lease", daemon=True)
    thread.start()
    try:
        yield
    except SpotInterruption:
        if not lost:
            raise
        # The stop came from the lost lease: report that (not retried), not a spot interruption.
    finally:
        done.set()
        thread.join()
    if lost:
        raise lost[0]
