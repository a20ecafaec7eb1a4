"""End-to-end inference throughput (JPEG → prediction) vs the model alone vs a naive DataLoader.

    .venv/bin/python bench/infer.py [--images 64] [--batch-size 16] [--device cpu|cuda]

The model is torchvision's ResNet-50 with random weights (nothing is downloaded; the cost of a
forward pass does not depend on the weights). Three ways through the same model and device:

* model only: ``steps.inference.pipeline.Predictor`` (normalize, forward, top-5) on random uint8 batches,
  i.e. the ceiling an input pipeline can reach;
* ours: ``steps.inference.shard.infer_shard``, InferFlow's pipeline, reading the sample JPEGs
  (``steps.demo.sample_data``, 224-640 px photos) from ``LocalStorage`` with threaded reads, threaded
  decode (reduced-size JPEG decode, resize, center crop), uint8 batches prefetched while the model
  runs, Parquet output;
* naive: ``torch.utils.data.DataLoader`` over a PIL dataset with torchvision's
  Resize(256)/CenterCrop(224)/ToTensor/Normalize, float32 batches, plain fp32 forward pass, with
  ``num_workers=0`` (the default) and one worker process per core;
* a user model: the same ResNet-50 as a ``python:`` model file (README, "Bring your own model")
  returning its pooled [N, 2048] features, model only (``CallableRunner``: normalise, forward,
  the outputs turned into an Arrow column) and end to end through ``infer_shard``.

A second table (skip it with ``--no-tars``) compares where the JPEGs come from, ``--decode cpu``:
the same images as in-memory bytes (no read cost at all) against WebDataset tar shards on local
disk (``--input-format webdataset``: one read per tar, images sliced out of it), with a model of
one linear layer so the input side is what is measured; it prints the process CPU seconds (what
a shared machine barely disturbs), wall seconds (which need an idle machine), and the client CPU
of the tar reading alone per image.

On ``--device cuda`` ours runs as it does in InferFlow there: pinned uint8 batches copied
asynchronously, channels-last, fp16 autocast, cudnn.benchmark. Each figure is the best of
``--repeats`` runs, taken in turns after one warm-up batch, measured in this run.
"""

from __future__ import annotations

import argparse
import io
import math
import tarfile
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import torch
import torchvision
from common import best_seconds, print_machine_info, print_table, usable_cores
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from steps.demo.sample_data import generate
from steps.imaging.placement import place
from steps.inference.pipeline import Batch, Predictor
from steps.inference.shard import infer_shard
from steps.inference.tasks import CallableRunner, ClassifyTask, InferTask, load_task
from steps.io.input_format import IMAGE_OBJECTS, TAR_SHARDS, InputFormat
from steps.io.local_storage import LocalStorage
from steps.io.storage import Storage
from steps.io.tar_reader import TarMembers, read_tar
from steps.models.architectures import IMAGENET_MEAN, IMAGENET_STD
from steps.models.loading import DEFAULT_INPUT_SIZE, LoadedModel

TOP_K = 5

USER_MODEL = """
import torch
import torchvision

class Features:
    input_size = 224
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, device):
        model = torchvision.models.resnet50(weights=None)
        model.fc = torch.nn.Identity()
        self.model = model.eval().to(device)

    def __call__(self, pixels, meta):
        return {"features": self.model(pixels)}

def build(device):
    return Features(device)
"""


def resnet50() -> LoadedModel:
    module = torchvision.models.resnet50(weights=None).eval()
    classes = [str(i) for i in range(1000)]
    return LoadedModel(
        module, "torchvision:resnet50 (random init)", "torchvision", "resnet50", classes, DEFAULT_INPUT_SIZE
    )


def model_only(predictor: Predictor, images: int, batch_size: int) -> None:
    pixels = torch.randint(0, 256, (batch_size, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE, 3), dtype=torch.uint8)
    pixels = pixels.pin_memory() if predictor.cuda else pixels
    for _ in range(math.ceil(images / batch_size)):
        predictor(pixels)


def user_model_only(runner: CallableRunner, images: int, batch_size: int) -> None:
    pixels = torch.randint(0, 256, (batch_size, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE, 3), dtype=torch.uint8)
    batch = Batch([str(i) for i in range(batch_size)], pixels, placements=[place(224, 224, 224, "crop")] * batch_size)
    for _ in range(math.ceil(images / batch_size)):
        runner(batch)


def ours(
    task: InferTask,
    source: Storage,
    keys: list[str],
    args: argparse.Namespace,
    scratch: Path,
    *,
    inputs: InputFormat = IMAGE_OBJECTS,
    decode: str = "cpu",
) -> None:
    target = LocalStorage(tempfile.mkdtemp(dir=scratch))  # fresh: committed parts would be skipped
    with redirect_stdout(io.StringIO()):  # its progress lines
        infer_shard(
            name="bench",
            keys=keys,
            source=source,
            target=target,
            task=task,
            batch_size=args.batch_size,
            chunk_size=len(keys),
            threads=16,
            workers=usable_cores(),
            devices=[torch.device(args.device)],
            decode=decode,
            inputs=inputs,
        )


class InMemory:
    """Input objects already in memory: reading costs nothing (the floor for any reader)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.uri = "memory://"
        self.objects = objects

    def read(self, key: str) -> bytes:
        return self.objects[key]

    def exists(self, key: str) -> bool:
        return key in self.objects


def linear_model() -> LoadedModel:
    """One linear layer over the mean colour: what is left to measure is the input side."""
    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 1000)).eval()
    return LoadedModel(module, "linear (bench)", "torchvision", "linear", [str(i) for i in range(1000)], 224)


def write_tars(objects: dict[str, bytes], directory: Path, per_tar: int) -> list[str]:
    """The images as WebDataset tars of ``per_tar`` samples (image + .json + .cls, as img2dataset writes)."""
    from steps.preprocess.webdataset import tar_member

    directory.mkdir(parents=True)
    keys = sorted(objects)
    names = []
    for start in range(0, len(keys), per_tar):
        name = f"{start // per_tar:05d}.tar"
        with tarfile.open(directory / name, "w", format=tarfile.USTAR_FORMAT) as archive:
            for index, key in enumerate(keys[start : start + per_tar], start):
                tar_member(archive, f"{index:09d}.jpg", objects[key])
                tar_member(archive, f"{index:09d}.json", b'{"url": "https://example.com/x.jpg"}')
                tar_member(archive, f"{index:09d}.cls", b"7")
        names.append(name)
    return names


def cpu_and_wall(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """The least process CPU seconds and the least wall seconds of ``repeats`` calls."""
    cpu, wall = float("inf"), float("inf")
    for _ in range(repeats):
        started_cpu, started = time.process_time(), time.perf_counter()
        run()
        cpu, wall = min(cpu, time.process_time() - started_cpu), min(wall, time.perf_counter() - started)
    return cpu, wall


def tar_reading_ms(source: LocalStorage, tars: list[str], images: int, repeats: int) -> float:
    """Client CPU ms per image of the tar reading alone: one read per tar, every image copied out.
    A pass takes about a millisecond: the best of at least 30, so that one scheduler tick or a cold
    cache is not the figure."""
    repeats = max(repeats, 30)

    def read_all() -> None:
        for name in tars:
            members = TarMembers([read_tar(source, name)])
            for key in members.keys:
                members.read(key)

    return cpu_and_wall(read_all, repeats)[0] / images * 1e3


def tar_shards_vs_bytes(objects: dict[str, bytes], args: argparse.Namespace, scratch: Path) -> None:
    tars = write_tars(objects, scratch / "tars", args.per_tar)
    on_disk, in_memory, model = LocalStorage(scratch / "tars"), InMemory(objects), ClassifyTask(linear_model(), TOP_K)
    keys = sorted(objects)
    runs = {
        "in-memory bytes (one object per image)": lambda: ours(model, in_memory, keys, args, scratch, decode="cpu"),
        f"tar shards on local disk ({args.per_tar} images a tar)": lambda: ours(
            model, on_disk, tars, args, scratch, inputs=TAR_SHARDS, decode="cpu"
        ),
    }
    for run in runs.values():
        run()  # warm-up: page cache, allocator
    measured = {label: cpu_and_wall(run, args.repeats) for label, run in runs.items()}
    reading = tar_reading_ms(on_disk, tars, len(keys), args.repeats)
    print(f"\n--decode cpu, a one-linear-layer model, {len(keys)} images, best of {args.repeats}:")
    print_table(
        ["input", "CPU ms / image", "wall images/s"],
        [(label, cpu / len(keys) * 1e3, len(keys) / wall) for label, (cpu, wall) in measured.items()],
    )
    (bytes_cpu, bytes_wall), (tar_cpu, tar_wall) = measured.values()
    print(
        f"ratio: tar shards {tar_cpu / bytes_cpu:.2f}x the CPU time of in-memory bytes "
        f"({tar_wall / bytes_wall:.2f}x wall; wall needs an idle machine); "
        f"tar reading {reading:.4f} ms client CPU per image (target <= 0.02)"
    )


class PilDataset(Dataset):
    """The textbook dataset: a list of files, opened with PIL, torchvision transforms."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.transform = transforms.Compose(
            [
                transforms.Resize(256),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


@torch.inference_mode()
def naive(module: torch.nn.Module, paths: list[Path], args: argparse.Namespace, workers: int) -> None:
    device = torch.device(args.device)
    loader = DataLoader(
        PilDataset(paths), batch_size=args.batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )
    for batch in loader:
        module(batch.to(device)).softmax(dim=1).topk(TOP_K, dim=1)[1].cpu()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="JPEGs to predict (default 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant; the best counts")
    parser.add_argument("--per-tar", type=int, default=64, help="images per tar shard in the tar table (default 64)")
    tables = parser.add_mutually_exclusive_group()
    tables.add_argument("--no-tars", action="store_true", help="skip the tar shards vs in-memory bytes table")
    tables.add_argument("--only-tars", action="store_true", help="only the tar shards vs in-memory bytes table")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")

    print_machine_info("bench/infer.py: JPEG -> prediction images/s vs model only vs a naive DataLoader")
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        scratch = Path(tmp)
        written = generate(scratch / "in", args.images)
        keys = sorted(s.key for s in written if s.label is not None)[: args.images]
        if not args.only_tars:
            models_table(keys, args, scratch)
        if not args.no_tars:
            tar_shards_vs_bytes({key: (scratch / "in" / key).read_bytes() for key in keys}, args, scratch)


def models_table(keys: list[str], args: argparse.Namespace, scratch: Path) -> None:
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    model = resnet50()
    paths = [scratch / "in" / key for key in keys]
    print(
        f"images:   {len(keys)} sample JPEGs (224-640 px), ResNet-50 at {DEFAULT_INPUT_SIZE} px, batch "
        f"{args.batch_size}, device {args.device} ({device_name}); best of {args.repeats}"
    )
    source = LocalStorage(scratch / "in")
    predictor = Predictor(model, torch.device(args.device), TOP_K)  # moves the module to the device
    (scratch / "features.py").write_text(USER_MODEL)
    user = load_task(f"python:{scratch / 'features.py'}:build", "classify", top_k=TOP_K, min_score=0)
    user_runner = CallableRunner(user.model, user.columns, torch.device(args.device))
    cores = usable_cores()
    variants = [
        (
            "model only (Predictor on random uint8 batches)",
            lambda: model_only(predictor, len(keys), args.batch_size),
        ),
        (
            "ours: infer_shard (InferFlow's pipeline)",
            lambda: ours(ClassifyTask(model, TOP_K), source, keys, args, scratch),
        ),
        ("naive: DataLoader + PIL, num_workers=0", lambda: naive(model.module, paths, args, 0)),
        (f"naive: DataLoader + PIL, num_workers={cores}", lambda: naive(model.module, paths, args, cores)),
        (
            "user model only (python:, [N, 2048] features)",
            lambda: user_model_only(user_runner, len(keys), args.batch_size),
        ),
        ("user model: infer_shard end to end", lambda: ours(user, source, keys, args, scratch)),
    ]
    model_only(predictor, args.batch_size, args.batch_size)  # warm-up: allocator, cudnn autotuning
    user_model_only(user_runner, args.batch_size, args.batch_size)
    rates = [len(keys) / seconds for seconds in best_seconds([run for _, run in variants], args.repeats)]
    ceiling, end_to_end, best_naive = rates[0], rates[1], max(rates[2:4])
    print_table(
        ["variant", "images/s", "vs model only"],
        [(label, rate, f"{rate / ceiling:.0%}") for (label, _), rate in zip(variants, rates, strict=True)],
    )
    print(
        f"ratio: ours {end_to_end / ceiling:.0%} of model-only; ours {end_to_end / best_naive:.2f}x the best "
        f"naive DataLoader ({end_to_end / rates[2]:.2f}x num_workers=0)"
    )
    print(f"ratio: user model end to end {rates[5] / rates[4]:.0%} of its model-only")


if __name__ == "__main__":
    main()
