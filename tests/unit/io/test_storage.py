"""The storage interface behaves the same on a local directory and on a real S3 API server."""

from pathlib import Path

import pytest

from steps.errors import ConfigError, RejectedInput
from steps.io.concurrency import map_bounded
from steps.io.storage import Storage, open_storage, read_input


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return open_storage(str(tmp_path / "root"))
    server = request.getfixturevalue("s3_server")
    bucket = server.make_bucket(f"storage-{tmp_path.name.lower().replace('_', '-')[-40:]}")
    return open_storage(f"{bucket}/some/prefix")


def test_write_read_exists_list_delete(storage: Storage) -> None:
    assert storage.list() == []
    storage.write("b/2.bin", b"two")
    storage.write("a.bin", b"one")
    storage.write("b/1.bin", b"")
    assert storage.read("b/2.bin") == b"two"
    assert storage.exists("a.bin") and not storage.exists("zzz")
    assert [(o.key, o.size) for o in storage.list()] == [("a.bin", 3), ("b/1.bin", 0), ("b/2.bin", 3)]
    assert [o.key for o in storage.list("b/")] == ["b/1.bin", "b/2.bin"]
    storage.delete("a.bin")
    assert not storage.exists("a.bin")


def test_overwrite_replaces_whole_object(storage: Storage) -> None:
    storage.write("x", b"a" * 1000)
    storage.write("x", b"short")
    assert storage.read("x") == b"short"


def test_missing_object_is_a_reject_not_a_crash(storage: Storage) -> None:
    with pytest.raises(RejectedInput, match="unreadable object"):
        read_input(storage, "does-not-exist.jpg")


def test_local_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    for i in range(5):
        storage.write("k", str(i).encode())
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_a_write_cut_short_by_a_kill_leaves_nothing_once_the_key_is_written_again(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    (tmp_path / "resized").mkdir()
    (tmp_path / "resized" / ".tmp-a.jpg").write_bytes(b"half of a")  # what a SIGKILL mid-write leaves
    assert storage.list() == []  # never listed as an object
    storage.write("resized/a.jpg", b"all of a")  # the retry writes the same key
    assert sorted(p.name for p in (tmp_path / "resized").iterdir()) == ["a.jpg"]
    assert storage.read("resized/a.jpg") == b"all of a"


def test_missing_bucket_is_a_one_line_config_error(s3_server) -> None:
    storage = open_storage("s3://no-such-bucket-here/x")
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here': expected an existing S3 bucket"):
        storage.check_bucket()


def test_map_bounded_runs_everything_with_bounded_concurrency() -> None:
    import threading
    import time

    active = 0
    peak = 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.005)
        with lock:
            active -= 1
        return i * i

    assert sorted(map_bounded(work, range(100), threads=4)) == [i * i for i in range(100)]
    assert 1 < peak <= 4
