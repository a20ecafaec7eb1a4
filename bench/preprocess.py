"""Preprocessing throughput per core: our pipeline vs the decode floor and Pillow loops, on camera-size JPEGs.

    .venv/bin/python bench/preprocess.py [--images 48] [--size 256] [--repeats 3]

Both sides read the same JPEG files from a local directory and write a resized JPEG and an edge
PNG per image. Ours is ``steps.preprocess.image.preprocess_image`` (decode once at reduced DCT scale,
resize, Sobel edges), timed alone on in-memory bytes and through the real
``steps.preprocess.shard.preprocess_shard`` (threaded I/O, atomic writes, Parquet ledger) on
``LocalStorage`` with 1 thread and with one thread per core; the same work in one process per
core shows what the machine's cores allow right now (GIL-free). Two yardsticks run beside them:
the draft-decode floor (``Image.draft`` + ``load`` alone: the Huffman decode at reduced DCT scale
that every libjpeg pipeline pays) and a plain Pillow loop that uses ``Image.draft``. Each figure
is the best of ``--repeats`` runs, taken in turns, measured in this run.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import redirect_stdout
from functools import partial
from pathlib import Path

from common import best_seconds, camera_jpegs, megapixels, print_machine_info, print_table, usable_cores
from PIL import Image, ImageFilter, ImageOps

from steps.io.storage import LocalStorage
from steps.preprocess.image import preprocess_image
from steps.preprocess.shard import preprocess_shard


def naive_loop(paths: list[Path], size: int, out: Path) -> None:
    """What a first version usually looks like: full decode, then shrink, filter and save."""
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
        edges = rgb.filter(ImageFilter.FIND_EDGES)
        rgb.save(out / f"{path.stem}.jpg", "JPEG", quality=90)
        edges.save(out / f"{path.stem}.png")


def draft_decode_floor(images: list[bytes], size: int) -> None:
    """Only the reduced-size decode: what no libjpeg-based pipeline can go below."""
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))
            image.load()


def draft_loop(paths: list[Path], size: int, out: Path) -> None:
    """A careful plain Pillow loop: reduced-size decode, upright, thumbnail, edges, save both."""
    for path in paths:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))
            rgb = ImageOps.exif_transpose(image.convert("RGB"))
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        edges = rgb.convert("L").filter(ImageFilter.FIND_EDGES)
        rgb.save(out / f"{path.stem}.jpg", "JPEG", quality=90)
        edges.save(out / f"{path.stem}.png", compress_level=6)


def in_memory_loop(images: list[bytes], size: int) -> None:
    for data in images:
        preprocess_image(data, size)


def in_processes(pool: ProcessPoolExecutor, images: list[bytes], size: int) -> None:
    """The scaling ceiling: no shared GIL at all (but pickling every image to a worker)."""
    list(pool.map(partial(preprocess_image, size=size), images, chunksize=4))


def shard(source: LocalStorage, keys: list[str], size: int, threads: int, scratch: Path) -> None:
    target = LocalStorage(tempfile.mkdtemp(dir=scratch))  # fresh: a finished shard would be skipped
    with redirect_stdout(io.StringIO()):  # its progress lines
        preprocess_shard(name="bench", keys=keys, source=source, target=target, size=size, threads=threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="camera-size JPEGs to process (default 48)")
    parser.add_argument("--grain", type=int, default=6, help="sensor-like noise, +-levels (0: plain upscale)")
    parser.add_argument("--size", type=int, default=256, help="longest side of the output (PreprocessFlow default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the best counts")
    parser.add_argument("--threads", type=int, default=usable_cores(), help="threads for the all-cores run")
    args = parser.parse_args(argv)

    print_machine_info("bench/preprocess.py: images/s per core, ours vs the draft-decode floor and Pillow loops")
    images = camera_jpegs(args.images, grain=args.grain)
    total_mp = sum(megapixels(d) for d in images)
    sizes = sorted(len(d) for d in images)
    print(
        f"images:   {len(images)} JPEGs, {total_mp / len(images):.1f} MP average ({total_mp:.0f} MP total), "
        f"{sizes[0] / 1e6:.1f}-{sizes[-1] / 1e6:.1f} MB ({sum(sizes) / 1e6 / total_mp:.2f} MB/MP), upscaled from the "
        f"sample-data source photos + noise of +-{args.grain} levels; output longest side {args.size}px; "
        f"best of {args.repeats}"
    )

    with (
        tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp,
        ProcessPoolExecutor(args.threads) as pool,
    ):
        scratch = Path(tmp)
        (scratch / "in").mkdir()
        keys = [f"{i:05d}.jpg" for i in range(len(images))]
        for key, data in zip(keys, images, strict=True):
            (scratch / "in" / key).write_bytes(data)
        paths = [scratch / "in" / key for key in keys]
        source = LocalStorage(scratch / "in")
        naive_out = scratch / "naive"
        naive_out.mkdir()
        all_threads = args.threads
        variants = [
            (
                "naive Pillow loop (full decode, LANCZOS thumbnail, FIND_EDGES)",
                1,
                lambda: naive_loop(paths, args.size, naive_out),
            ),
            ("draft-decode floor (Image.draft + load only)", 1, lambda: draft_decode_floor(images, args.size)),
            (
                "Image.draft Pillow loop (draft, thumbnail, FIND_EDGES, save)",
                1,
                lambda: draft_loop(paths, args.size, naive_out),
            ),
            ("preprocess_image on in-memory bytes", 1, lambda: in_memory_loop(images, args.size)),
            ("preprocess_shard, LocalStorage, 1 thread", 1, lambda: shard(source, keys, args.size, 1, scratch)),
            (
                f"preprocess_shard, LocalStorage, {all_threads} threads",
                all_threads,
                lambda: shard(source, keys, args.size, all_threads, scratch),
            ),
            (
                f"preprocess_image in {all_threads} processes (ceiling)",
                all_threads,
                lambda: in_processes(pool, images, args.size),
            ),
        ]
        in_processes(pool, images[: 4 * all_threads], args.size)  # start the workers outside the timing
        results = []
        timings = best_seconds([run for _, _, run in variants], args.repeats)
        for (label, threads, _), seconds in zip(variants, timings, strict=True):
            cores = min(threads, usable_cores())
            results.append((label, cores, seconds, len(images) / seconds, len(images) / seconds / cores))

    naive_per_core = results[0][4]
    print_table(
        ["variant", "cores", "seconds", "images/s", "images/s per core", "Mpx/s per core", "per core vs naive"],
        [
            (label, cores, seconds, rate, per_core, total_mp / seconds / cores, f"{per_core / naive_per_core:.1f}x")
            for label, cores, seconds, rate, per_core in results
        ],
    )
    floor, draft, in_memory, one, everything, processes = results[1:]
    print(
        f"scaling:  {everything[1]} threads give {everything[3] / one[3]:.2f}x the 1-thread rate, "
        f"{processes[1]} processes {processes[3] / in_memory[3]:.2f}x (linear would be {everything[1]}x)"
    )
    print(
        f"ratio: {one[4] / naive_per_core:.1f}x per core (1 thread), "
        f"{everything[4] / naive_per_core:.1f}x per core ({everything[1]} cores) vs the naive loop"
    )
    print(
        f"ratio: {one[4] / floor[4]:.2f} of the draft-decode floor per core (preprocess_shard, 1 thread; "
        f"in memory {in_memory[4] / floor[4]:.2f}, {everything[1]} threads {everything[4] / floor[4]:.2f}); "
        f"target >= 0.85"
    )
    print(f"ratio: {one[4] / draft[4]:.2f}x the Image.draft Pillow loop per core (preprocess_shard, 1 thread)")


if __name__ == "__main__":
    main()
