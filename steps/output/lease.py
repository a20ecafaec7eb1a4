"""One writer per output: a lease on the output location, taken in ``start``, renewed by shard
tasks while they run, released by ``end``.

The lease is one small JSON record at ``_lease.json`` naming its holder (run, host, driver pid,
since, last heartbeat, expiry), written only with the Storage's conditional writes: taking it is
a ``create`` (S3 ``If-None-Match: *``), renewing it and taking over a dead run's lease a
``replace`` of the record still read (S3 ``If-Match`` on its ETag; locally under a ``flock``). A
holder counts as dead when its record expired (no heartbeat for ``LEASE_TTL_S``) or when it ran
on this host and its driver process is gone (a killed local run, rerun at once). Otherwise a
second run is refused in ``start`` with ``OutputInUse``: one line naming the holder, its host,
since when it holds the lease and its last heartbeat, then what to do.

There is no flag to take a live holder's lease: two runs writing one output would each count the
other's chunks as stale, so the only takeovers are of holders that are provably gone (expired, or
a dead process on this host). A run that really died elsewhere frees its output ``LEASE_TTL_S``
after its last heartbeat, and the refusal says when.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from steps.errors import LeaseConflict, SpotInterruption
from steps.io.storage import Storage
from steps.output.layout import LEASE_KEY
from steps.progress import log

LEASE_TTL_S = 1800.0  # no heartbeat for this long: the holder is presumed dead (covers queue waits)
HEARTBEAT_S = 60.0
_ATTEMPTS = 8  # conditional writes lost to a concurrent renewal of the same lease are retried


def _utc(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
        return f"{self.run} on {self.host} (pid {self.pid}) since {_utc(self.since)}"

    def dead(self, now: float) -> str:
        """Why this holder no longer counts, or empty while it does."""
        if now > self.expires:
            return f"no heartbeat for {now - self.heartbeat:.0f} s"
        if self.host == socket.gethostname() and not _alive(self.pid):
            return f"its driver process {self.pid} on this host is gone"
        return ""


class OutputInUse(LeaseConflict):
    """A live run holds the output's lease: ``start`` refuses to write there (not retried)."""

    def __init__(self, uri: str, holder: Holder, now: float) -> None:
        super().__init__(
            f"output {uri!r} is in use: {holder.run} on {holder.host} (pid {holder.pid}) holds its lease since "
            f"{_utc(holder.since)}, last heartbeat {_utc(holder.heartbeat)} ({now - holder.heartbeat:.0f} s ago); "
            f"wait for that run to end (or, if it died, for its lease to expire at {_utc(holder.expires)}, "
            f"{LEASE_TTL_S / 60:.0f} min after its last heartbeat), or choose another --output"
        )


class LeaseLost(LeaseConflict):
    """This run's lease on its output was taken over by another run: stop writing there (never
    retried, even when raised while a SpotInterruption unwinds)."""

    def __init__(self, uri: str, holder: str) -> None:
        super().__init__(f"output {uri!r}: this run lost its lease; {holder} holds it now; this run stops writing")


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


def _read(storage: Storage) -> tuple[Holder, str] | None:
    current = storage.read_versioned(LEASE_KEY)
    return None if current is None else (Holder(**json.loads(current[0])), current[1])


def acquire(storage: Storage, run: str, ttl_s: float = LEASE_TTL_S) -> Holder:
    """Take the output's lease for ``run``; OutputInUse naming the holder while a live run has it."""
    now = time.time()
    mine = Holder(run, socket.gethostname(), os.getppid(), now, now, now + ttl_s, uuid.uuid4().hex)
    for _ in range(_ATTEMPTS):
        if storage.create(LEASE_KEY, _encode(mine)):
            return mine
        current = _read(storage)
        if current is None:
            continue  # released meanwhile
        holder, version = current
        if holder.token == mine.token:
            return mine  # our create succeeded but its response was lost, and the retry found it
        now = time.time()
        why = holder.dead(now)
        if not why:
            raise OutputInUse(storage.uri, holder, now)
        if storage.replace(LEASE_KEY, _encode(mine), version):
            log(f"took over the lease on {storage.uri} from {holder.describe()}: {why}")
            return mine
    raise LeaseConflict(f"output {storage.uri!r}: other runs kept racing for its lease; run again")


def renew(storage: Storage, token: str, ttl_s: float = LEASE_TTL_S) -> None:
    """Heartbeat the lease held with ``token``; LeaseLost if another run holds it now."""
    for _ in range(_ATTEMPTS):
        current = _read(storage)
        if current is None or current[0].token != token:
            raise LeaseLost(storage.uri, "nobody" if current is None else current[0].describe())
        holder, version = current
        now = time.time()
        renewed = replace(holder, host=socket.gethostname(), pid=os.getppid(), heartbeat=now, expires=now + ttl_s)
        if storage.replace(LEASE_KEY, _encode(renewed), version):
            return
    raise LeaseLost(storage.uri, "a run racing this one for it")


def release(storage: Storage, token: str) -> None:
    """Give the lease up if this run (``token``) still holds it."""
    for _ in range(_ATTEMPTS):
        current = _read(storage)
        if current is None or current[0].token != token:
            return
        if storage.delete_version(LEASE_KEY, current[1]):
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
