"""S3 object reads outside the GIL (obstore), against the real S3 API server on 127.0.0.1."""

from __future__ import annotations

import pickle
import sys

import pytest
from botocore.exceptions import ClientError

from steps.errors import RejectedInput
from steps.io import object_reader as reader_module
from steps.io.concurrency import map_bounded
from steps.io.object_reader import object_reader
from steps.io.s3_storage import S3Storage, s3_client
from steps.io.storage import open_storage, read_input, read_input_view
from tests.support.flows import S3Server


@pytest.fixture
def bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    name = f"reader-{request.node.name.lower().replace('_', '-')[-40:]}"
    s3_server.make_bucket(name)
    return name


def test_objects_are_read_by_obstore_from_the_configured_endpoint(bucket: str) -> None:
    storage = open_storage(f"s3://{bucket}/in")
    payloads = {f"{index:03d}.jpg": bytes([index]) * (10_000 + index) for index in range(40)}
    list(map_bounded(lambda item: storage.write(*item), payloads.items(), 8))
    reader = object_reader(bucket, s3_client(), 8)
    assert reader is not None
    assert reader.read("in/007.jpg") == payloads["007.jpg"]  # path-style, plain http, env credentials
    read = dict(map_bounded(lambda key: (key, storage.read(key)), sorted(payloads), 8))
    assert read == payloads and all(type(data) is bytes for data in read.values())
    # A view lends obstore's own buffer (tars are read whole this way, never copied whole).
    view = storage.read_view("039.jpg")
    assert isinstance(view, memoryview) and view.readonly and view == payloads["039.jpg"]


def test_a_missing_object_is_s3s_no_such_key_and_a_reject(bucket: str) -> None:
    reader = object_reader(bucket, s3_client(), 2)
    with pytest.raises(ClientError) as raised:
        reader.read("nothing/here.jpg")
    assert raised.value.response["Error"]["Code"] == "NoSuchKey"
    for read in (read_input, read_input_view):
        with pytest.raises(RejectedInput, match="unreadable object: S3 NoSuchKey"):
            read(open_storage(f"s3://{bucket}"), "nothing/here.jpg")


def test_without_obstore_botocore_reads_and_says_so_once(
    bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "obstore", None)  # import obstore raises ImportError
    reader_module._say_botocore_reads.cache_clear()
    storage = open_storage(f"s3://{bucket}")
    storage.write("a.jpg", b"abc")
    assert object_reader(bucket, s3_client(), 2) is None
    assert storage.read("a.jpg") == b"abc" and storage.read_view("a.jpg") == b"abc"
    said = [line for line in capsys.readouterr().err.splitlines() if "read with botocore" in line]
    assert len(said) == 1 and "obstore is not installed" in said[0]


def test_s3_storage_pickles_as_its_uri_for_worker_processes(bucket: str) -> None:
    storage = open_storage(f"s3://{bucket}/p", threads=4)
    storage.write("k.bin", b"payload")
    copy = pickle.loads(pickle.dumps(storage))
    assert isinstance(copy, S3Storage) and copy.uri == storage.uri and copy.threads == 4
    assert copy.read("k.bin") == b"payload"
