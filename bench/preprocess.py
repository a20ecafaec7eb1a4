"""Preprocessing throughput per core: our pipeline vs the decode floor and Pillow loops, on camera-size JPEGs.

    .venv/bin/python bench/preprocess.py [--images 48] [--size 256] [--repeats 3] [--set held-out|tuned]
                                         [--clock wall|cpu]

The default set is held out from tuning (``common.held_out_camera_jpegs``: 8.7 MP average, quality
85-95, 4:2:0 or 4:2:2, sensor-like shot and read noise, other source photos and seed); ``--set
tuned`` is the set the code was tuned on (``common.camera_jpegs``, ``--grain``). ``--clock cpu``
times with ``time.process_time`` (what this process used, little moved by other jobs on a shared
machine) and so leaves out the rows that use several cores.

Both sides read the same JPEG files from a local directory and write a resized JPEG and an edge
PNG per image. Ours is ``steps.preprocess.image.preprocess_image`` (decode once at reduced DCT scale,
resize, Sobel edges), timed alone on in-memory bytes and through the real
``steps.preprocess.shard.preprocess_shard`` (threaded I/O, atomic writes, Parquet ledger) on
``LocalStorage`` with 1 thread and with one thread per core; the same work in one process per
core shows what the machine's cores allow right now (GIL-free). Two yardsticks run beside them:
the draft-decode floor (``Image.draft`` + ``load`` alone: the Huffman decode at reduced DCT scale
that every libjpeg pipeline pays) and a plain Pillow loop that uses ``Image.draft``. Each figure
is the best of ``--repeats`` runs, taken in turns, measured in this run. Last, where the time of
one image goes: each stage of ours timed alone on every image (best of ``--repeats``, per image).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import redirect_stdout
from functools import partial
from pathlib import Path

import simplejpeg
from common import (
    best_seconds,
    camera_jpegs,
    held_out_camera_jpegs,
    megapixels,
    print_machine_info,
    print_table,
    usable_cores,
)
from PIL import Image, ImageFilter, ImageOps

from steps.imaging.codec import decode, draft_scale, encode, resize_to_fit
from steps.imaging.edges import sobel_edges
from steps.io.local_storage import LocalStorage
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


def turbo_decode_floor(images: list[bytes], size: int) -> None:
    """The same reduced-size decode through libjpeg-turbo's own API (simplejpeg), as ours does."""
    for data in images:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        scale = draft_scale(width, height, size)
        simplejpeg.decode_jpeg(data, min_width=-(-width // scale), min_height=-(-height // scale))


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


def stage_breakdown(images: list[bytes], paths: list[Path], size: int, repeats: int, out: Path) -> list[tuple]:
    """Milliseconds of CPU per image in each stage of ours, each timed alone on every image (best of
    ``repeats`` per image, in turns), with the floor beside them: where the time above it goes."""
    decoded = [decode(data, max_side=size) for data in images]
    originals = [(d.width, d.height) for d in decoded]
    resized = [resize_to_fit(d.image, size, original) for d, original in zip(decoded, originals, strict=True)]
    edges = [sobel_edges(image) for image in resized]
    jpegs = [encode(image, "JPEG") for image in resized]
    pngs = [encode(image, "PNG") for image in edges]
    target = LocalStorage(out)
    stages = [
        ("draft-decode floor (Pillow Image.draft + load)", lambda i: draft_decode_floor(images[i : i + 1], size)),
        ("decode, ours (libjpeg-turbo at draft scale, header, upright)", lambda i: decode(images[i], max_side=size)),
        ("LANCZOS resize of the reduced image", lambda i: resize_to_fit(decoded[i].image, size, originals[i])),
        ("JPEG encode (quality 90)", lambda i: encode(resized[i], "JPEG")),
        ("Sobel edges (numpy)", lambda i: sobel_edges(resized[i])),
        ("edge-map PNG encode", lambda i: encode(edges[i], "PNG")),
        ("read the input file (LocalStorage.read)", lambda i: target.read(str(paths[i].relative_to(out)))),
        (
            "write both outputs atomically (2 x LocalStorage.write)",
            lambda i: (target.write(f"w/resized/{i}.jpg", jpegs[i]), target.write(f"w/edges/{i}.png", pngs[i])),
        ),
    ]
    best = [[float("inf")] * len(images) for _ in stages]
    for _ in range(repeats):
        for index in range(len(images)):
            for stage, (_, run) in enumerate(stages):
                started = time.process_time()
                run(index)
                best[stage][index] = min(best[stage][index], time.process_time() - started)
    return [(label, sum(times) / len(images) * 1000) for (label, _), times in zip(stages, best, strict=True)]


def report(results: list[tuple], breakdown: list[tuple[str, float]], count: int, total_mp: float) -> None:
    naive_per_core = results[0][4]
    print_table(
        ["variant", "cores", "seconds", "images/s", "images/s per core", "Mpx/s per core", "per core vs naive"],
        [
            (label, cores, seconds, rate, per_core, total_mp / seconds / cores, f"{per_core / naive_per_core:.1f}x")
            for label, cores, seconds, rate, per_core in results
        ],
    )
    floor, draft, turbo, in_memory, one = results[1:6]
    print(f"ratio: {one[4] / naive_per_core:.1f}x per core (preprocess_shard, 1 thread) vs the naive loop")
    print(
        f"ratio: {one[4] / floor[4]:.2f} of the draft-decode floor per core (preprocess_shard, 1 thread; "
        f"in memory {in_memory[4] / floor[4]:.2f}); target >= 0.80"
    )
    print(
        f"ratio: {one[4] / draft[4]:.2f}x the Image.draft Pillow loop per core (preprocess_shard, 1 thread; "
        f"in memory {in_memory[4] / draft[4]:.2f}x); target >= 1.2x"
    )
    print(f"ratio: {one[4] / turbo[4]:.2f} of the same decode through simplejpeg (our own decoder's floor)")
    if len(results) > 6:
        everything, processes = results[6:]
        print(
            f"scaling:  {everything[1]} threads give {everything[3] / one[3]:.2f}x the 1-thread rate, "
            f"{processes[1]} processes {processes[3] / in_memory[3]:.2f}x (linear would be {everything[1]}x)"
        )
    floor_ms = breakdown[0][1]
    print("\nwhere one image's CPU time goes (each stage alone, best per image, ms):")
    print_table(
        ["stage", "ms / image", "of the floor"], [(label, ms, f"{ms / floor_ms:.0%}") for label, ms in breakdown]
    )
    above = sum(ms for _, ms in breakdown[1:]) - floor_ms
    shard_ms = one[2] / count * 1000
    print(
        f"stages above the floor: {above:+.2f} ms; preprocess_shard, 1 thread: {shard_ms:.2f} ms per image, i.e. "
        f"{shard_ms - sum(ms for _, ms in breakdown[1:]):+.2f} ms of shard bookkeeping (thread hand-off, rows, "
        f"Parquet ledger, progress) beyond the stages"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="camera-size JPEGs to process (default 48)")
    parser.add_argument("--set", choices=("held-out", "tuned"), default="held-out", help="which JPEGs (see above)")
    parser.add_argument("--grain", type=int, default=6, help="--set tuned: sensor-like noise, +-levels")
    parser.add_argument("--size", type=int, default=256, help="longest side of the output (PreprocessFlow default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the best counts")
    parser.add_argument("--threads", type=int, default=usable_cores(), help="threads for the all-cores run")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: process_time, 1-core rows")
    args = parser.parse_args(argv)

    print_machine_info("bench/preprocess.py: images/s per core, ours vs the draft-decode floor and Pillow loops")
    if args.set == "held-out":
        images = held_out_camera_jpegs(args.images)
        made = "held out from tuning: other source photos, quality 85-95, 4:2:0/4:2:2, shot + read noise"
    else:
        images = camera_jpegs(args.images, grain=args.grain)
        made = f"the tuning set: upscaled sample-data source photos + noise of +-{args.grain} levels, quality 92"
    total_mp = sum(megapixels(d) for d in images)
    sizes = sorted(len(d) for d in images)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(
        f"images:   {len(images)} JPEGs, {total_mp / len(images):.1f} MP average ({total_mp:.0f} MP total), "
        f"{sizes[0] / 1e6:.1f}-{sizes[-1] / 1e6:.1f} MB ({sum(sizes) / 1e6 / total_mp:.2f} MB/MP), {made}; "
        f"output longest side {args.size}px; best of {args.repeats}, {args.clock} clock"
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
            (
                "the same reduced decode via simplejpeg (libjpeg-turbo API)",
                1,
                lambda: turbo_decode_floor(images, args.size),
            ),
            ("preprocess_image on in-memory bytes", 1, lambda: in_memory_loop(images, args.size)),
            ("preprocess_shard, LocalStorage, 1 thread", 1, lambda: shard(source, keys, args.size, 1, scratch)),
        ]
        if args.clock == "wall":  # process_time would not see the worker processes, nor show scaling
            variants += [
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
        shard(source, keys[:1], args.size, 1, scratch)  # imports (pyarrow's Parquet writer) outside the timing
        results = []
        timings = best_seconds([run for _, _, run in variants], args.repeats, clock)
        for (label, threads, _), seconds in zip(variants, timings, strict=True):
            cores = min(threads, usable_cores())
            results.append((label, cores, seconds, len(images) / seconds, len(images) / seconds / cores))
        breakdown = stage_breakdown(images, paths, args.size, args.repeats, scratch)

    report(results, breakdown, len(images), total_mp)


if __name__ == "__main__":
    main()
