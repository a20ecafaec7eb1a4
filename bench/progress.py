"""Live progress costs nothing measurable: a shard with and without a live-card consumer.

    .venv/bin/python bench/progress.py [--images 320] [--repeats 5]

Runs the real ``steps.preprocess.preprocess_shard`` (camera-like JPEGs on ``LocalStorage``,
chunks of 16) with no ``on_progress`` and with one that does what ``flows/live_card.py`` does in
the pipeline's thread (take a lock, keep the snapshot; the card is drawn by another thread), and
times ``Progress.advance`` — called once per image — on its own. Each figure is the best of
``--repeats`` runs, taken in turns.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

from common import best_seconds, camera_jpegs, print_machine_info, print_table

from steps.io.local_storage import LocalStorage
from steps.preprocess.shard import preprocess_shard
from steps.progress import Progress, ProgressCallback, ShardProgress

ADVANCE_CALLS = 1_000_000


class Latest:
    """The live card's side in the pipeline's thread: a lock and an assignment."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: ShardProgress | None = None
        self.calls = 0

    def __call__(self, snapshot: ShardProgress) -> None:
        with self.lock:
            self.value = snapshot
            self.calls += 1


def shard(source: LocalStorage, keys: list[str], scratch: Path, on_progress: ProgressCallback | None) -> None:
    target = LocalStorage(tempfile.mkdtemp(dir=scratch))  # fresh: a finished shard would be skipped
    with redirect_stdout(io.StringIO()):  # its log lines
        preprocess_shard(
            name="bench",
            keys=keys,
            source=source,
            target=target,
            size=256,
            threads=2,
            chunk_size=16,
            on_progress=on_progress,
        )


def advance_ns(on_update: ProgressCallback | None) -> float:
    progress = Progress("bench", ADVANCE_CALLS, on_update=on_update)
    started = time.perf_counter()
    for _ in range(ADVANCE_CALLS):
        progress.advance()
    return (time.perf_counter() - started) / ADVANCE_CALLS * 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=320, help="JPEGs in the shard (default 320)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant; the best counts")
    args = parser.parse_args(argv)

    print_machine_info("bench/progress.py: a shard with and without live progress")
    images = camera_jpegs(args.images, min_mp=1.0, max_mp=3.0)
    print(f"images:   {len(images)} JPEGs of 1-3 MP, chunks of 16, 2 threads, best of {args.repeats}")
    consumer = Latest()
    with tempfile.TemporaryDirectory(prefix="bench-progress-") as tmp:
        scratch = Path(tmp)
        (scratch / "in").mkdir()
        keys = [f"{i:05d}.jpg" for i in range(len(images))]
        for key, data in zip(keys, images, strict=True):
            (scratch / "in" / key).write_bytes(data)
        source = LocalStorage(scratch / "in")
        plain, live = best_seconds(
            [lambda: shard(source, keys, scratch, None), lambda: shard(source, keys, scratch, consumer)],
            args.repeats,
        )
    quiet, watched = advance_ns(None), advance_ns(Latest())
    per_image_ns = plain / len(images) * 1e9
    print_table(
        ["variant", "seconds", "images/s"],
        [
            ("preprocess_shard, no on_progress", plain, len(images) / plain),
            ("preprocess_shard, live-card consumer", live, len(images) / live),
        ],
    )
    print(
        f"advance(): {quiet:.0f} ns per call without a consumer, {watched:.0f} ns with one "
        f"({watched / per_image_ns:.4%} of the {per_image_ns / 1e6:.1f} ms an image takes); "
        f"{consumer.calls} snapshots handed over in {args.repeats} live runs"
    )
    print(f"ratio: {live / plain:.3f}x the time with live progress (1.000 = no cost; runs on a shared machine vary)")


if __name__ == "__main__":
    main()
