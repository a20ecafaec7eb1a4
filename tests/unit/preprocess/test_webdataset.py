"""WebDataset tars: deterministic bytes, one sample per good key, split at the size limit, and
readable by the ``webdataset`` package and by TrainFlow's reader."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import webdataset as wds

from steps.io.local_storage import LocalStorage
from steps.output.layout import edges_key, manifest_key, resized_key
from steps.preprocess.webdataset import WebDatasetPacker, read_label_map
from steps.training.webdataset_input import describe_webdataset, is_webdataset_input, samples

KEYS = ["a/1.jpg", "b.jpg", "c.v2.jpg", "d.jpg"]


def packed_output(root: Path, max_tar_bytes: int = 10**9) -> tuple[LocalStorage, list[str]]:
    target = LocalStorage(root)
    for i, key in enumerate(KEYS):
        target.write(resized_key(key), b"jpeg-%d" % i * 100)
        target.write(edges_key(key), b"png-%d" % i)
    chunk = pa.Table.from_pylist(
        [
            {"key": k, "status": "rejected" if k == "b.jpg" else "ok", "width": 8, "height": 6, "input_bytes": 99}
            for k in KEYS
        ]
    )
    labels = {"a/1.jpg": "cat", "c.v2.jpg": "dog"}
    packer = WebDatasetPacker(target, "all", KEYS, 4, labels, threads=2, max_tar_bytes=max_tar_bytes)
    return target, packer(chunk)


def test_tars_hold_each_good_sample_and_read_back_with_webdataset(tmp_path: Path) -> None:
    target, tars = packed_output(tmp_path / "out")
    assert tars == ["webdataset/all/chunk-00000-000.tar"]
    read = list(wds.WebDataset(str(tmp_path / "out" / tars[0]), shardshuffle=False))
    assert [s["__key__"] for s in read] == ["all-000000000", "all-000000002", "all-000000003"]
    first = read[0]
    assert first["jpg"] == b"jpeg-0" * 100 and first["edges.png"] == b"png-0"
    assert json.loads(first["json"]) == {"key": "a/1.jpg", "label": "cat", "width": 8, "height": 6, "input_bytes": 99}
    assert json.loads(read[2]["json"])["label"] is None  # d.jpg has no labels.csv row

    again, _ = packed_output(tmp_path / "again")
    assert again.read(tars[0]) == target.read(tars[0])  # a retried chunk writes the same bytes


def test_a_chunk_is_split_into_parts_at_the_size_limit(tmp_path: Path) -> None:
    target, tars = packed_output(tmp_path / "out", max_tar_bytes=3000)
    assert len(tars) == 3 and all(target.read(t) for t in tars)
    keys = [s["__key__"] for t in tars for s in wds.WebDataset(str(tmp_path / "out" / t), shardshuffle=False)]
    assert keys == ["all-000000000", "all-000000002", "all-000000003"]


def test_training_reads_only_complete_shards(tmp_path: Path) -> None:
    target, _ = packed_output(tmp_path / "out")
    assert not is_webdataset_input(target), "no completion manifest yet"
    target.write(manifest_key("all"), b"")
    assert is_webdataset_input(target)
    assert [(meta["key"], bool(jpeg)) for meta, jpeg in samples(target)] == [
        ("a/1.jpg", True),
        ("c.v2.jpg", True),
        ("d.jpg", True),
    ]
    assert describe_webdataset(target)["per_class"] == {"cat": 1, "dog": 1}


def test_label_map_reads_labels_csv(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("key,label\nx.jpg,cat\n")
    assert read_label_map(LocalStorage(tmp_path)) == {"x.jpg": "cat"}
    assert read_label_map(LocalStorage(tmp_path / "none")) == {}
