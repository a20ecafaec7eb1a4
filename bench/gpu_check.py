"""The device check: model-only, end-to-end and preprocessing throughput on one GPU, as one table.

    bench/gpu_check.sh            # on a GPU machine, <= 8 minutes
    bench/gpu_check.sh --smoke    # tiny sizes, runs anywhere (CPU here), proves the script works

Imports only torch, torchvision, numpy, Pillow, pyarrow, pandas and project modules that need
nothing else (no metaflow, boto3 or scikit-image: the device image has none of them). The test
images are synthetic (``bench/gpu/inputs.py``), made here.

Rows (images/s; each ratio against the row it names), each printed as it is measured:
* model only (``bench/gpu/model.py``): ResNet-50 (random weights; ResNet-18 with --smoke),
  channels-last, bf16 and fp16 autocast eager, a CUDA graph of the eager bf16 forward,
  ``torch.compile(mode="reduce-overhead")``; each falls back to a "failed: ..." line. ``Predictor``
  (the pipeline's model stage: uint8 in, normalise, top-5 out) is the reference for end to end;
* end to end (``bench/gpu/pipeline.py``): ``infer_shard`` from JPEG files in page cache
  (ImageNet-size photos) to Parquet, ``--decode cpu`` (Pillow on every core) and ``--decode gpu``
  (batched nvJPEG), and from WebDataset tars on local disk through the project's tar input with
  ``--decode gpu``; timed from the first committed chunk to the last (53,248 images from files),
  so model construction, the class-name probe and the pipeline fill are outside the figure;
* preprocessing of camera-size JPEGs: ``preprocess_shard`` on the GPU vs its CPU path on every core.
Before timing, a correctness line compares the tensor decode on CUDA with the same code on CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torchvision
from gpu.inputs import jpeg_bytes, synthetic_photo
from gpu.model import model_only
from gpu.pipeline import end_to_end, preprocessing
from gpu.settings import FULL, SMOKE
from gpu.table import Rows
from PIL import Image

from steps.imaging.jpeg_header import read_jpeg_header
from steps.imaging.tensor_decode import RGB, decode_jpegs

if "botocore" not in sys.modules:
    try:
        import botocore.exceptions  # noqa: F401 - read_input imports it at call time
    except ImportError:
        # The device image has no botocore; read_input only uses ClientError to classify S3
        # errors, which LocalStorage never raises. A stand-in class keeps the project code as is.
        exceptions = types.ModuleType("botocore.exceptions")
        exceptions.ClientError = type("ClientError", (Exception,), {})
        sys.modules["botocore"] = types.ModuleType("botocore")
        sys.modules["botocore.exceptions"] = exceptions


def decode_agreement(device: torch.device) -> str:
    """The tensor decode on ``device`` vs the same code on CPU: pixels, orientation and refusals."""
    rng = np.random.default_rng(2)
    photo = synthetic_photo(rng, 320, 240)
    exif = Image.Exif()
    exif[0x0112] = 6
    good = jpeg_bytes(photo)
    files = [
        good,
        jpeg_bytes(photo, progressive=True),
        jpeg_bytes(photo.convert("L")),
        jpeg_bytes(photo, exif=exif.tobytes()),
        good[:600] + bytes(range(256)) * 16 + good[4696:],
    ]
    headers = [read_jpeg_header(data) for data in files]
    on_device = decode_jpegs(files, headers, device, RGB)
    on_cpu = decode_jpegs(files, headers, torch.device("cpu"), RGB)
    diffs, same_refusals = [], True
    for ours, theirs in zip(on_device, on_cpu, strict=True):
        same_refusals &= (ours is None) == (theirs is None)
        if ours is not None and theirs is not None:
            if ours.shape != theirs.shape:
                return f"decode check: shapes differ {tuple(ours.shape)} vs {tuple(theirs.shape)}"
            diffs.append((ours.cpu().int() - theirs.int()).abs().float())
    worst = max(float(d.max()) for d in diffs)
    mean = float(torch.stack([d.mean() for d in diffs]).mean())
    refused = sum(x is None for x in on_device)
    return (
        f"decode check ({device} vs cpu, baseline/progressive/gray/EXIF-6/corrupt): mean |diff| {mean:.2f}, "
        f"max {worst:.0f}; refused {refused}/{len(files)}, same as CPU: {same_refusals}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU if no GPU: proves the script runs")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not args.smoke:
        parser.error("no CUDA device visible; run with --smoke for a CPU dry run")
    settings = SMOKE if args.smoke else FULL
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(
        f"== bench/gpu_check.py{' --smoke' if args.smoke else ''}: {name}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, {len(os.sched_getaffinity(0))} usable cores, "
        f"bf16 {'yes' if cuda and torch.cuda.is_bf16_supported() else 'no'}"
    )
    print(decode_agreement(device))
    rows = Rows()
    rows.header()
    reference = model_only(settings, device, rows, sync)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:  # on disk; the page cache keeps it in memory
        end_to_end(settings, device, Path(tmp), rows, reference)
        preprocessing(settings, device, Path(tmp), rows)
    for source, start in (("JPEG files", "end to end: --decode gpu"), ("tar shards", "end to end from tar shards")):
        found = [f"{rate} img/s, {ratio}" for label, rate, ratio in rows if label.startswith(start)]
        print(
            f"ratio: from {source}: {found[0] if found else 'n/a'} (target on one H100/H200: >= 10,000 img/s, >= 0.80)"
        )
    print(f"took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
