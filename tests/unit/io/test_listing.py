"""Parallel listing: local directories and S3 key ranges give exactly the objects there are, and
no directory entry, however odd, stops a listing; reading one is a reject with its reason."""

import hashlib
import os
import threading
from pathlib import Path

import pytest

from steps.errors import RejectedInput
from steps.io import listing
from steps.io.local_storage import LocalStorage
from steps.io.storage import open_storage, read_input


def test_local_listing_walks_nested_directories_in_parallel(tmp_path: Path) -> None:
    expected = []
    for d in range(12):
        for f in range(30):
            key = f"d{d:02}/sub{f % 3}/{f:03}.jpg"
            (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / key).write_bytes(b"x" * f)
            expected.append((key, f))
    (tmp_path / ".tmp-partial").write_bytes(b"half a write")
    storage = LocalStorage(tmp_path, threads=4)
    assert [(o.key, o.size) for o in storage.list()] == sorted(expected)
    assert sum(len(p) for p in storage.pages("d03/")) == 30


def test_odd_entries_are_listed_and_each_read_is_a_reject_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "good.jpg").write_bytes(b"ok")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "inside.jpg").write_bytes(b"ok")
    (tmp_path / "to-folder").symlink_to(tmp_path / "folder")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "line\nbreak.jpg").write_bytes(b"ok")
    storage = LocalStorage(tmp_path)
    keys = [o.key for o in storage.list()]
    assert keys == sorted(
        ["good.jpg", "dangling.jpg", "loop-a", "loop-b", "folder/inside.jpg", "to-folder", "pipe", "line\nbreak.jpg"]
    )
    reasons = {}
    for key in ("dangling.jpg", "loop-a", "to-folder", "pipe"):
        with pytest.raises(RejectedInput) as rejected:
            read_input(storage, key)
        reasons[key] = str(rejected.value)
    assert reasons == {
        "dangling.jpg": "unreadable object: a dangling symlink",
        "loop-a": "unreadable object: a symlink loop",
        "to-folder": "unreadable object: a directory (or a symlink to one)",
        "pipe": "unreadable object: not a regular file (a FIFO, socket or device)",
    }
    assert read_input(storage, "line\nbreak.jpg") == b"ok"


def test_a_directory_that_cannot_be_scanned_is_listed_as_one_reject(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "secret.jpg").write_bytes(b"x")
    (tmp_path / "open.jpg").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path):  # root bypasses file modes, so deny the way the kernel would
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    storage = LocalStorage(tmp_path)
    assert [o.key for o in storage.list()] == ["locked", "open.jpg"]
    with pytest.raises(RejectedInput, match="a directory"):
        read_input(storage, "locked")


def test_a_failing_task_fails_the_listing_and_stops_the_workers() -> None:
    def broken(add):
        yield [listing.ObjectInfo("a", 1)]
        raise RuntimeError("listing broke")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="listing broke"):
        list(listing.crawl([broken], threads=3))
    assert threading.active_count() == before


def sha_key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest() + ".jpg"


@pytest.fixture
def small_pages(monkeypatch) -> int:
    """Pages of 20 keys, so a few hundred objects exercise probing, splitting and pagination."""
    monkeypatch.setattr(listing, "PAGE", 20)
    return 20


def counting_client(storage) -> dict[str, int]:
    """Count LIST requests and the most in flight at once, from botocore's own events."""
    seen = {"requests": 0, "in_flight": 0, "max_in_flight": 0}
    lock = threading.Lock()

    def before(**_):
        with lock:
            seen["requests"] += 1
            seen["in_flight"] += 1
            seen["max_in_flight"] = max(seen["max_in_flight"], seen["in_flight"])

    def after(**_):
        with lock:
            seen["in_flight"] -= 1

    events = storage._client.meta.events
    events.register("before-send.s3.ListObjectsV2", before)
    events.register("after-call.s3.ListObjectsV2", after)
    return seen


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(sha_key, id="sha256-flat"),
        pytest.param(lambda i: f"cam{i % 7}/IMG_{i:05}.JPG", id="directories"),
        pytest.param(lambda i: ["", "A", "z/", "0", "ff", "g"][i % 6] + sha_key(i), id="mixed-edges"),
    ],
)
def test_s3_listing_in_ranges_finds_every_key_once(s3_server, small_pages, layout, request) -> None:
    bucket = s3_server.make_bucket(f"listing-{request.node.callspec.id}")
    client = s3_server.client()
    keys = sorted({"in/" + layout(i) for i in range(300)} | {"in/labels.csv", "outside.jpg"})
    for key in keys:
        client.put_object(Bucket=bucket[5:], Key=key, Body=b"xy")
    storage = open_storage(f"{bucket}/in", threads=8)
    seen = counting_client(storage)
    listed = storage.list()
    assert [o.key for o in listed] == [k[3:] for k in keys if k.startswith("in/")]
    assert {o.size for o in listed} == {2}
    assert seen["requests"] > 300 / small_pages  # split into ranges, not one sequential walk
    if request.node.callspec.id == "sha256-flat":
        assert seen["max_in_flight"] > 1
