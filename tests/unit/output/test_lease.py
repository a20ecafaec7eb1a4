"""One writer per output: the lease, locally and on S3 (moto honours If-None-Match / If-Match), and
the Storage conditional writes it is made of."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from steps.errors import ConfigError, LeaseConflict, SpotInterruption
from steps.io.local_storage import LocalStorage
from steps.io.s3_storage import S3Storage
from steps.io.storage import Storage
from steps.output.layout import LEASE_KEY
from steps.output.lease import LeaseLost, OutputInUse, acquire, heartbeat, release, renew
from steps.spot import is_transient
from tests.support.flows import S3Server


@pytest.fixture(params=["local", "s3"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "out")
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = f"lease-{abs(hash(str(tmp_path))) % 10**8}"
    server.make_bucket(bucket)
    return S3Storage(f"s3://{bucket}/out")


def rewrite(storage: Storage, change: Callable[[dict], None]) -> None:
    """Edit the stored lease record as another process would have left it."""
    record = json.loads(storage.read(LEASE_KEY))
    change(record)
    storage.write(LEASE_KEY, json.dumps(record).encode())


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_run_is_refused_with_one_line_naming_the_holder(output: Storage) -> None:
    first = acquire(output, "PreprocessFlow/1")
    with pytest.raises(OutputInUse) as refused:
        acquire(output, "PreprocessFlow/2")
    assert not isinstance(refused.value, ConfigError) and not is_transient(refused.value)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"output {output.uri!r} is in use: PreprocessFlow/1 on ")
    assert f"(pid {first.pid}) holds its lease since " in message and "UTC" in message
    assert ", last heartbeat " in message and " s ago); wait for that run to end " in message
    assert "for its lease to expire at " in message and message.endswith("or choose another --output")
    release(output, first.token)
    second = acquire(output, "PreprocessFlow/2")  # released: free again
    assert second.run == "PreprocessFlow/2"


def test_an_expired_lease_is_taken_over_and_the_old_holder_loses_it(output: Storage) -> None:
    first = acquire(output, "InferFlow/1")
    rewrite(output, lambda r: r.update(host="elsewhere"))  # not this host: only expiry frees it
    with pytest.raises(OutputInUse, match="InferFlow/1 on elsewhere"):
        acquire(output, "InferFlow/2")
    rewrite(output, lambda r: r.update(expires=time.time() - 1))  # no heartbeat for a whole TTL
    second = acquire(output, "InferFlow/2")
    with pytest.raises(LeaseLost, match="InferFlow/2"):
        renew(output, first.token)
    renew(output, second.token)
    release(output, first.token)  # not the holder: leaves the lease alone
    assert output.exists(LEASE_KEY)


def test_a_killed_local_run_on_this_host_is_taken_over_at_once(output: Storage) -> None:
    acquire(output, "PreprocessFlow/1")
    rewrite(output, lambda r: r.update(pid=dead_pid()))
    assert acquire(output, "PreprocessFlow/2").run == "PreprocessFlow/2"


def test_concurrent_takers_get_exactly_one_lease(output: Storage) -> None:
    won, refused = [], []

    def take(i: int) -> None:
        try:
            won.append(acquire(output, f"PreprocessFlow/{i}"))
        except OutputInUse:
            refused.append(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 7


def test_heartbeat_renews_while_work_runs_and_stops_work_when_the_lease_is_taken(output: Storage) -> None:
    mine = acquire(output, "PreprocessFlow/1")
    stop = threading.Event()
    with heartbeat(output, mine.token, stop, every_s=0.05):
        time.sleep(0.2)
    renewed = json.loads(output.read(LEASE_KEY))
    assert renewed["token"] == mine.token and renewed["heartbeat"] > mine.heartbeat
    assert not stop.is_set()

    with pytest.raises(LeaseLost) as lost, heartbeat(output, mine.token, stop, every_s=0.05):
        rewrite(output, lambda r: r.update(token="another run"))
        assert stop.wait(5)  # the shard is told to stop after its chunk in flight
        raise SpotInterruption("stopped before chunk 3")  # as run_chunked does on a set stop
    assert not is_transient(lost.value)  # even chained to the interruption: never retried


def test_conditional_create_replace_and_delete(output: Storage) -> None:
    """Storage's conditional writes, the lease's only way to touch its record: create only if
    absent (S3 If-None-Match: *), replace and delete only the version read (S3 If-Match)."""
    assert output.read_versioned("_record.json") is None
    assert output.create("_record.json", b"{}") and not output.create("_record.json", b"[]")
    data, version = output.read_versioned("_record.json")
    assert data == b"{}"
    assert not output.replace("_record.json", b"{}", '"0000"') and output.replace("_record.json", b'{"a": 1}', version)
    assert output.read("_record.json") == b'{"a": 1}'
    assert not output.delete_version("_record.json", version)  # the version changed with the replace
    assert output.delete_version("_record.json", output.read_versioned("_record.json")[1])
    assert not output.exists("_record.json") and not output.replace("_record.json", b"{}", version)


def test_concurrent_creates_of_one_record_let_exactly_one_win(output: Storage) -> None:
    won = []
    threads = [
        threading.Thread(target=lambda i=i: won.append(i) if output.create("_one.json", str(i).encode()) else None)
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and output.read("_one.json") == str(won[0]).encode()


def test_a_lease_that_others_keep_taking_is_a_lease_conflict_not_configuration() -> None:
    assert issubclass(OutputInUse, LeaseConflict) and issubclass(LeaseLost, LeaseConflict)
    assert not issubclass(LeaseConflict, ConfigError)
