"""Every bad parameter of every flow fails before any foreach task, in one line, with no
traceback and a non-zero exit: numbers at parse time (click's ``Invalid value``), the rest in
``start`` (``Invalid configuration``, one attempt: start has no @retry).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from steps.io.local_storage import LocalStorage
from steps.models.architectures import build_architecture
from steps.output.lease import acquire, release
from tests.support.flows import run_flow
from tests.support.models import CLASSES

PARSE_TIME = [
    ("preprocess", ("--chunk-size", "0"), "Invalid value for '--chunk-size': 0 is smaller than the minimum"),
    ("preprocess", ("--chunk-size", "-1"), "Invalid value for '--chunk-size': -1 is smaller than the minimum"),
    ("preprocess", ("--max-shards", "0"), "Invalid value for '--max-shards': 0 is smaller than the minimum"),
    ("preprocess", ("--prefix-width", "5"), "Invalid value for '--prefix-width': 5 is not in the valid range"),
    ("preprocess", ("--size", "0"), "Invalid value for '--size'"),
    ("infer", ("--batch-size", "0"), "Invalid value for '--batch-size'"),
    ("infer", ("--top-k", "-2"), "Invalid value for '--top-k'"),
    ("train", ("--epochs", "0"), "Invalid value for '--epochs'"),
    ("train", ("--val-fraction", "1.5"), "Invalid value for '--val-fraction'"),
    ("train", ("--learning-rate", "0"), "Invalid value for '--learning-rate'"),
]


def base_args(flow: str, inputs: Path, tmp_path: Path) -> list[str]:
    args = ["--input", str(inputs), "--output", str(tmp_path / "out")]
    return [*args, "--model", "{model}"] if flow == "infer" else args


def assert_one_clean_line(result, message: str) -> None:
    assert not result.ok
    assert message in result.output, result.output[-2000:]
    assert "Traceback" not in result.output and "Internal error" not in result.output, result.output[-3000:]
    assert "process_shard/" not in result.output and "/train/" not in result.output  # no fan-out, no training
    assert sum(message in line for line in result.output.splitlines()) == 1


@pytest.mark.parametrize(("flow", "bad", "message"), PARSE_TIME, ids=[f"{f}{b[0]}{b[1]}" for f, b, _ in PARSE_TIME])
def test_bad_numbers_fail_at_parse_time(
    flow: str, bad: tuple[str, ...], message: str, sample_dir: Path, tmp_path: Path
) -> None:
    args = [a.replace("{model}", "unused.pt") for a in base_args(flow, sample_dir, tmp_path)]
    result = run_flow(flow, tmp_path / "wd", *args, *bad)
    assert result.process.returncode == 2
    assert_one_clean_line(result, message)
    assert "Workflow starting" not in result.output  # not even start ran


def pickled_model(path: Path) -> Path:
    """A whole pickled module: what torch.save(model) writes, refused by weights_only loading."""
    torch.save(build_architecture("resnet18", len(CLASSES)), path)
    return path


def tiny_labelled_set(sample_dir: Path, directory: Path) -> Path:
    """One image per class: nothing can be held out for validation."""
    directory.mkdir()
    with (sample_dir / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    firsts = {}
    for row in rows:
        firsts.setdefault(row["label"], row["key"])
    picked = sorted(firsts.items())[:2]
    for _, key in picked:
        shutil.copy(sample_dir / key, directory / key)
    (directory / "labels.csv").write_text("key,label\n" + "".join(f"{k},{label}\n" for label, k in picked))
    return directory


START_TIME = [
    ("preprocess", ("--input", "/no/such/dir"), "--input '/no/such/dir': expected an existing directory of images"),
    ("preprocess", ("lease",), "is in use: PreprocessFlow/1 on "),
    ("infer", ("--model", "{tmp}/missing.pt"), "--model '{tmp}/missing.pt': expected an existing file"),
    ("infer", ("--model", "torchvision:resnet18:{tmp}/pickled.pt"), "expected a file of tensors (a state dict)"),
    ("train", ("--architecture", "resnet_18"), "architecture 'resnet_18': expected small_cnn or a torchvision"),
    ("train", ("--resume-from", "{tmp}/nothing"), "--resume-from '{tmp}/nothing': expected a complete checkpoint"),
    ("train", ("--initial-weights", "{tmp}/pickled.pt"), "expected a file of tensors (a state dict)"),
    ("train", ("tiny",), "enough images per class to hold out --val-fraction"),
]


@pytest.mark.parametrize(("flow", "bad", "message"), START_TIME, ids=[f"{f}-{b[-1][-12:]}" for f, b, _ in START_TIME])
def test_bad_settings_fail_in_start_in_one_line(
    flow: str, bad: tuple[str, ...], message: str, sample_dir: Path, tmp_path: Path
) -> None:
    def fill(text: str) -> str:
        return text.format(tmp=tmp_path)

    if any("pickled" in b for b in bad):
        pickled_model(tmp_path / "pickled.pt")
    inputs = tiny_labelled_set(sample_dir, tmp_path / "tiny") if bad == ("tiny",) else sample_dir
    args = [
        fill(a.replace("{model}", "torchvision:resnet18:{tmp}/pickled.pt")) for a in base_args(flow, inputs, tmp_path)
    ]
    extra = [] if bad in (("tiny",), ("lease",)) else [fill(b) for b in bad]
    if "--input" in extra:
        args[1], extra = extra[1], []
    if "--model" in extra:
        args[args.index("--model") + 1], extra = extra[1], []
    held = acquire(LocalStorage(tmp_path / "out"), "PreprocessFlow/1") if bad == ("lease",) else None
    try:
        result = run_flow(flow, tmp_path / "wd", *args, *extra)
    finally:
        if held:
            release(LocalStorage(tmp_path / "out"), held.token)
    assert_one_clean_line(result, fill(message))
    # A live run writing the output is no configuration error: its own headline, the same one line.
    assert ("Output in use" if bad == ("lease",) else "Invalid configuration") in result.output
    assert "start/1" in result.output and "start/2" not in result.output  # one attempt
