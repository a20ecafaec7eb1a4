"""The device check: model-only, end-to-end and preprocessing throughput on one GPU, as one table.

    bench/gpu_check.sh            # on a GPU machine, <= 8 minutes
    bench/gpu_check.sh --smoke    # tiny sizes, runs anywhere (CPU here), proves the script works

Imports only torch, torchvision, numpy, Pillow, pyarrow, pandas and project modules that need
nothing else (no metaflow, boto3 or scikit-image: the device image has none of them). The test
images are synthetic (smooth colour fields, shapes and sensor-like noise), made here.

Rows (images/s; each ratio against the row it names), each printed as it is measured:
* model only: ResNet-50 (random weights; ResNet-18 with --smoke), channels-last, bf16 and fp16
  autocast eager, a CUDA graph of the eager bf16 forward, ``torch.compile(mode="reduce-overhead")``;
  each falls back to a "failed: ..." line. ``Predictor`` (the pipeline's model stage: uint8 in, normalise, top-5 out)
  is the reference for end to end;
* end to end: ``infer_shard`` from JPEG files in page cache (ImageNet-size photos) to Parquet,
  ``--decode cpu`` (Pillow on every core) and ``--decode gpu`` (batched nvJPEG), and from tar shards
  on local disk (each tar read whole, members sliced from memory) with ``--decode gpu``; timed
  from the first committed chunk to the last (53,248 images), so model construction, the class-name
  probe and the pipeline fill are outside the figure;
* preprocessing of camera-size JPEGs: ``preprocess_shard`` on the GPU vs its CPU path on every core.
Before timing, a correctness line compares the tensor decode on CUDA with the same code on CPU.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import threading
import time
import types
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from steps.imaging.jpeg_header import read_jpeg_header
from steps.imaging.tensor_decode import RGB, decode_jpegs
from steps.inference.pipeline import Predictor
from steps.inference.shard import infer_shard
from steps.inference.tasks import ClassifyTask
from steps.io.local_storage import LocalStorage
from steps.models.loading import DEFAULT_INPUT_SIZE, LoadedModel
from steps.preprocess.shard import preprocess_shard

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


def synthetic_photo(rng: np.random.Generator, width: int, height: int, grain: int = 6) -> Image.Image:
    """Smooth colour gradients, a few rectangles and per-pixel noise: compresses like a photo."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b, c = rng.uniform(0.002, 0.02, 3)
    pixels = np.stack(
        [127 + 100 * np.sin(a * x + b * y), 127 + 100 * np.cos(b * x - c * y), 127 + 100 * np.sin(c * (x + y))], -1
    )
    for _ in range(6):
        left, top = rng.integers(0, width - 2), rng.integers(0, height - 2)
        pixels[top : top + height // 5, left : left + width // 5] = rng.uniform(0, 255, 3)
    pixels += rng.integers(-grain, grain + 1, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, quality: int = 90, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **save)
    return buffer.getvalue()


def write_set(directory: Path, unique: list[bytes], count: int) -> list[str]:
    """``count`` files cycling through ``unique`` (decoding cost does not depend on repeats); the
    repeats are hard links, so writing 50k+ files costs no more disk than the unique ones."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = [f"{index:06d}.jpg" for index in range(count)]
    for index, key in enumerate(keys):
        if index < len(unique):
            (directory / key).write_bytes(unique[index])
        else:
            os.link(directory / keys[index % len(unique)], directory / key)
    return keys


def images_per_second(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"


def timed_rate(run: Callable[[], None], images_per_call: int, seconds: float, sync: Callable[[], None]) -> float:
    """images/s of ``run`` after warm-up, over about ``seconds``."""
    for _ in range(3):
        run()
    sync()
    started = time.perf_counter()
    run()
    sync()
    calls = max(1, int(seconds / max(time.perf_counter() - started, 1e-6)))
    started = time.perf_counter()
    for _ in range(calls):
        run()
    sync()
    return calls * images_per_call / (time.perf_counter() - started)


class Rows(list):
    """The table's rows, each printed as it is measured (a timeout keeps every row so far)."""

    WIDTHS = (76, 10, 48)

    def header(self) -> None:
        print(self._line(("measurement", "images/s", "ratio")))
        print(self._line(tuple("-" * w for w in self.WIDTHS)))

    def _line(self, row: tuple[str, str, str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, self.WIDTHS, strict=True)) + " |"

    def append(self, row: tuple[str, str, str]) -> None:
        super().append(row)
        print(self._line(row), flush=True)


def attempt(label: str, measure: Callable[[], float], rows: list[tuple[str, str, str]], ref: str) -> float | None:
    try:
        rate = measure()
    except Exception as err:  # noqa: BLE001 - a failed variant is a table row, not the end of the check
        rows.append((label, f"failed: {type(err).__name__}: {str(err).splitlines()[0][:90]}", ""))
        return None
    rows.append((label, images_per_second(rate), ref))
    return rate


def classifier(architecture: str) -> Callable[[], LoadedModel]:
    """Fresh CPU copies of a random-weight torchvision model (Predictor moves its module in place)."""

    def build() -> LoadedModel:
        module = getattr(torchvision.models, architecture)(weights=None).eval()
        return LoadedModel(
            module,
            f"{architecture} (random init)",
            "torchvision",
            architecture,
            [str(i) for i in range(1000)],
            DEFAULT_INPUT_SIZE,
        )

    return build


def model_only(args: argparse.Namespace, device: torch.device, rows: list, sync: Callable[[], None]) -> float:
    """The model rows; returns Predictor's rate (the end-to-end reference)."""
    predictor = Predictor(args.model(), device, top_k=5)  # channels-last on CUDA
    cuda = device.type == "cuda"
    size, batch = DEFAULT_INPUT_SIZE, args.batch_size
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)

    def eager(dtype: torch.dtype) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=cuda):
                predictor.module(x)

        return run

    def rate_of(run: Callable[[], None]) -> Callable[[], float]:
        return lambda: timed_rate(run, batch, args.seconds, sync)

    eager_bf16 = attempt("model only: eager bf16, channels-last", rate_of(eager(torch.bfloat16)), rows, "")
    attempt("model only: eager fp16, channels-last", rate_of(eager(torch.float16)), rows, "")

    def cuda_graph() -> float:
        if not cuda:
            raise RuntimeError("no CUDA device")
        run = eager(torch.bfloat16)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        return rate_of(graph.replay)()

    graphed = attempt("model only: CUDA graph of eager bf16", cuda_graph, rows, "")

    def compiled() -> float:
        if args.smoke:
            raise RuntimeError("skipped in --smoke (minutes of compilation)")
        fast = torch.compile(predictor.module, mode="reduce-overhead")

        def run() -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                fast(x)

        return rate_of(run)()

    best = attempt("model only: torch.compile reduce-overhead bf16", compiled, rows, "")
    ceiling = max(r for r in (eager_bf16, graphed, best, 0.0) if r is not None)
    rate = rate_of(lambda: predictor(pixels))()
    ratio = f"{rate / ceiling:.2f} of the best model-only row" if ceiling else ""
    rows.append(("model only: Predictor (uint8 in, normalise, top-5 out)", images_per_second(rate), ratio))
    return rate


class TimedTarget(LocalStorage):
    """An output directory that notes when each prediction part (one chunk) is committed."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.committed: list[float] = []

    def write(self, key: str, data: bytes) -> None:
        super().write(key, data)
        if "/part-" in key:
            self.committed.append(time.perf_counter())


class TarShards:
    """Read-only storage over WebDataset-style tars on local disk: key ``<tar>/<member>``.

    Each tar is read whole (one read) and its members are sliced from memory, never from disk
    one by one; a few tars stay loaded, as keys arrive in plan order, tar by tar.
    """

    def __init__(self, root: Path, keep: int = 4) -> None:
        self.root, self.keep, self.uri = root, keep, str(root)
        self._loaded: dict[str, tuple[bytes, dict[str, tuple[int, int]]]] = {}
        self._lock = threading.Lock()

    def _members(self, tar_name: str) -> tuple[bytes, dict[str, tuple[int, int]]]:
        with self._lock:
            if tar_name not in self._loaded:
                data = (self.root / tar_name).read_bytes()
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    index = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
                if len(self._loaded) >= self.keep:
                    self._loaded.pop(next(iter(self._loaded)))
                self._loaded[tar_name] = (data, index)
            return self._loaded[tar_name]

    def read(self, key: str) -> bytes:
        tar_name, _, member = key.partition("/")
        data, index = self._members(tar_name)
        offset, size = index[member]
        return data[offset : offset + size]


def write_tars(directory: Path, unique: list[bytes], count: int, per_tar: int) -> list[str]:
    """``count`` images cycling through ``unique``, in tars of ``per_tar``; keys ``<tar>/<member>``."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = []
    for first in range(0, count, per_tar):
        name = f"shard-{first // per_tar:05d}.tar"
        with tarfile.open(directory / name, "w") as tar:
            for index in range(first, min(first + per_tar, count)):
                info = tarfile.TarInfo(f"{index:06d}.jpg")
                info.size = len(unique[index % len(unique)])
                tar.addfile(info, io.BytesIO(unique[index % len(unique)]))
                keys.append(f"{name}/{info.name}")
    return keys


def end_to_end(args: argparse.Namespace, device: torch.device, scratch: Path, rows: list, reference: float) -> None:
    """infer_shard from JPEG files and from tar shards on local disk, timed from the first committed
    chunk to the last: model construction, the class-name probe and the pipeline fill are outside."""
    rng = np.random.default_rng(0)
    unique = [jpeg_bytes(synthetic_photo(rng, 500, 375)) for _ in range(args.unique)]
    keys = write_set(scratch / "photos", unique, args.images)
    tar_keys = write_tars(scratch / "tars", unique, args.images, args.tar_images)
    cores = len(os.sched_getaffinity(0))

    def rate(source: object, decode: str, subset: list[str], target: str) -> float:
        model = args.model()  # built before the clock starts
        output = TimedTarget(scratch / target)
        with redirect_stdout(io.StringIO()):
            infer_shard(
                name="bench",
                keys=subset,
                source=source,
                target=output,
                task=ClassifyTask(model, 5),
                batch_size=args.batch_size,
                chunk_size=args.chunk_size,
                threads=16,
                workers=cores,
                decode=decode,
                devices=[device],
            )
        first, last = output.committed[0], output.committed[-1]
        return (len(subset) - args.chunk_size) / (last - first)

    runs = (
        ("", LocalStorage(scratch / "photos"), keys, "cpu", f"Pillow, {cores} threads"),
        ("", LocalStorage(scratch / "photos"), keys, "gpu", f"decode_jpeg on {device.type}"),
        (" from tar shards", TarShards(scratch / "tars"), tar_keys, "gpu", f"decode_jpeg on {device.type}"),
    )
    for index, (what, source, subset, decode, how) in enumerate(runs):
        rate(source, decode, subset[: 2 * args.chunk_size], f"warm-{index}")  # cudnn autotuning, nvJPEG start-up
        measured = rate(source, decode, subset, f"out-{index}")
        timed = len(subset) - args.chunk_size
        rows.append(
            (
                f"end to end{what}: --decode {decode} ({how}), {timed:,} timed",
                images_per_second(measured),
                f"{measured / reference:.2f} of Predictor model-only",
            )
        )


def preprocessing(args: argparse.Namespace, device: torch.device, scratch: Path, rows: list) -> None:
    rng = np.random.default_rng(1)
    width, height = args.camera
    unique = [jpeg_bytes(synthetic_photo(rng, width, height, grain=6), quality=92) for _ in range(args.camera_unique)]
    keys = write_set(scratch / "camera", unique, args.camera_images)
    source = LocalStorage(scratch / "camera")
    cores = len(os.sched_getaffinity(0))
    rates = {}
    for label, on in (("cpu", None), ("gpu", device)):
        with redirect_stdout(io.StringIO()):
            preprocess_shard(
                name="warm",
                keys=keys[:8],
                source=source,
                target=LocalStorage(scratch / f"pw-{label}"),
                size=256,
                threads=max(cores, 16) if on is not None else cores,
                device=on,
            )
            started = time.perf_counter()
            preprocess_shard(
                name="bench",
                keys=keys,
                source=source,
                target=LocalStorage(scratch / f"pre-{label}"),
                size=256,
                threads=max(cores, 16) if on is not None else cores,
                device=on,
            )
        rates[label] = len(keys) / (time.perf_counter() - started)
    rows.append(
        (f"preprocessing {width}x{height} JPEGs: CPU path, {cores} threads", images_per_second(rates["cpu"]), "")
    )
    rows.append(
        (
            f"preprocessing {width}x{height} JPEGs: tensor path on {device.type}",
            images_per_second(rates["gpu"]),
            f"{rates['gpu'] / rates['cpu']:.1f}x the CPU path (target >= 10x)",
        )
    )


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
    # End to end: 14 chunks of 4,096 images, 53,248 timed (from the first committed chunk to the last).
    full = dict(
        batch_size=256,
        seconds=3.0,
        images=57_344,
        chunk_size=4096,
        tar_images=1000,
        unique=256,
        camera=(3264, 2448),
        camera_unique=16,
        camera_images=512,
    )
    smoke = dict(
        batch_size=4,
        seconds=0.2,
        images=16,
        chunk_size=4,
        tar_images=5,
        unique=8,
        camera=(640, 480),
        camera_unique=2,
        camera_images=8,
    )
    for name, value in (smoke if args.smoke else full).items():
        setattr(args, name, value)
    args.model = classifier("resnet18" if args.smoke else "resnet50")
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
    reference = model_only(args, device, rows, sync)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:  # on disk; the page cache keeps it in memory
        end_to_end(args, device, Path(tmp), rows, reference)
        preprocessing(args, device, Path(tmp), rows)
    e2e = [r for r in rows if r[0].startswith("end to end: --decode gpu")]
    print(f"ratio: {e2e[0][2] if e2e else 'n/a'} (targets: >= 10,000 img/s and >= 0.80 on one H100/H200)")
    print(f"took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
