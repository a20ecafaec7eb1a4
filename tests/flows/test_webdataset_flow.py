"""PreprocessFlow --format webdataset, really run, then TrainFlow trained from its tar shards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import webdataset as wds

from tests.support.flows import run_flow


def test_webdataset_shards_read_back_and_train(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    preprocess = run_flow(
        "preprocess",
        tmp_path / "wd",
        "--input",
        str(sample_dir),
        "--output",
        str(out),
        "--format",
        "webdataset",
        "--shard-size",
        "20",
        "--chunk-size",
        "8",
        "--threads",
        "2",
    )
    assert preprocess.ok, preprocess.output[-3000:]
    with (sample_dir / "labels.csv").open() as f:
        labels = {row["key"]: row["label"] for row in csv.DictReader(f)}

    tars = sorted(str(p) for p in (out / "webdataset").rglob("*.tar"))
    assert len(tars) > 1
    read = list(wds.WebDataset(tars, shardshuffle=False).decode("pil"))
    metas = [s["json"] for s in read]
    assert sorted(m["key"] for m in metas) == sorted(labels)  # every good image once, rejects not at all
    assert all(m["label"] == labels[m["key"]] for m in metas)
    sample = read[0]
    assert max(sample["jpg"].size) <= 256 and sample["edges.png"].size == sample["jpg"].size
    width, height = sample["json"]["width"], sample["json"]["height"]  # the original's size
    assert (
        max(width, height) >= max(sample["jpg"].size)
        and abs(width / height - sample["jpg"].size[0] / sample["jpg"].size[1]) < 0.02
    )

    train = run_flow(
        "train",
        tmp_path / "wd",
        "--input",
        str(out),
        "--output",
        str(tmp_path / "model"),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--image-size",
        "32",
    )
    assert train.ok, train.output[-3000:]
    summary = train.client_run().data.summary
    assert (summary["images"], summary["classes"]) == (len(labels), len(set(labels.values())))
    assert json.dumps(summary)  # plain data
