"""PreprocessFlow --format webdataset, really run, then TrainFlow trained from its tar shards and
InferFlow predicting straight from them (tar-shard input), checked by ``spot-batch verify``."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import webdataset as wds

from steps.inference.predictions import load_predictions
from tests.support.flows import SPOT_BATCH, run_flow


def test_webdataset_shards_read_back_train_and_infer(sample_dir: Path, tmp_path: Path) -> None:
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
        "100",  # one shard task; its chunks of 8 make 7 tars
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

    # InferFlow from the tars as they are: auto-detected (tars and their .json indexes, no images).
    tars_dir = out / "webdataset"
    infer = run_flow(
        "infer",
        tmp_path / "wd",
        "--input",
        str(tars_dir),
        "--output",
        str(tmp_path / "predictions"),
        "--model",
        train.client_run().data.model_uri,
        "--decode",
        "cpu",
        "--shard-size",
        "20",
        "--max-shards",
        "2",
        "--batch-size",
        "8",
        "--workers",
        "2",
    )
    assert infer.ok, infer.output[-3000:]
    run = infer.client_run()
    assert run.data.shard_plan["input_format"] == "webdataset" and run.data.shard_plan["shards"] == 2
    predictions = load_predictions(str(tmp_path / "predictions"))
    sample_ids = {m["key"]: s["__key__"].rsplit("/", 1)[-1] for m, s in zip(metas, read, strict=True)}
    tar_of = {s["__key__"].rsplit("/", 1)[-1]: Path(s["__url__"]).relative_to(tars_dir).as_posix() for s in read}
    wanted = sorted(f"{tar_of[i]}/{i}.jpg" for i in sample_ids.values())
    assert list(predictions["key"]) == wanted  # <tar key>/<member>: every sample once, its tar's own rows
    assert (predictions["status"] == "ok").all() and run.data.summary["processed"] == len(labels)
    verified = subprocess.run(
        [SPOT_BATCH, "verify", str(tmp_path / "predictions"), "--input", str(tars_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"OK: {len(tars)}/{len(tars)} input keys" in verified.stdout
