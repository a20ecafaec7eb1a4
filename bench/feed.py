"""Feeding a task from S3: images/s per task process and client CPU per image, for three readers.

    .venv/bin/python bench/feed.py [--images 2000] [--size 100000] [--threads 4,16,64] [--latency-ms 20]

Against ``bench/getserver.py`` on 127.0.0.1 answering after ``--latency-ms`` (a real S3 GET's first
byte), each reader in a fresh process of its own, on ``map_bounded`` threads as the flows read:

* botocore, one object per image: ``get_object`` + ``Body.read`` (what ``S3Storage.read`` was);
* ``S3Storage.read``, one object per image: obstore, outside the GIL (``steps.io.object_reader``);
* tar shards: each tar GET whole through ``S3Storage.read`` and its images sliced out of it by
  the project's reader (``steps.io.tar_reader``: ``read_tar``, then every image's bytes), 500 a tar;
* tar members from memory: the same reader over tars already in memory, no GET: the part of the
  tar path's CPU that is per member rather than bytes received.

Client CPU per image (``time.process_time`` of the whole process, native threads included) is the
figure that carries to a big machine: at 10^4 images/s a GPU needs <= 0.1 ms per image from a
task's one GIL. images/s here is bound by this machine's few shared cores and the one-loop
Python server; it shows whether a reader scales with threads, and needs an idle machine for more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import print_machine_info, print_table
from object_readers import get_server

from steps.io.concurrency import map_bounded
from steps.io.tar_reader import TarSamples, read_tar, split_samples
from tests.support.offline import LOOPBACK_ONLY_ENV

BUCKET = "bench"
READERS = ("botocore", "S3Storage.read", "tar shards", "tar members from memory")
IMAGES_PER_TAR = 500


def images_of(samples: TarSamples) -> int:
    """Images of one tar read, each one's bytes taken out as a decoder would be handed them."""
    return sum(bool(samples.image(key)) for key in samples.images)


def worker(reader: str, images: int, size: int, threads: int) -> dict:
    """In the reader's own process: images read, client CPU and wall seconds (after a warm-up)."""
    from steps.io.s3_storage import S3Storage, s3_client

    storage = S3Storage(f"s3://{BUCKET}", max_connections=threads)
    if reader == "tar members from memory":
        from getserver import tar_of

        tar = tar_of(IMAGES_PER_TAR, size)
        keys = [f"{index:05d}.tar" for index in range(max(1, images // IMAGES_PER_TAR))]
        read = lambda key: images_of(split_samples(key, tar))  # noqa: E731
    elif reader == "tar shards":
        keys = [f"tars/{IMAGES_PER_TAR}x{size}/{index:05d}.tar" for index in range(max(1, images // IMAGES_PER_TAR))]
        read = lambda key: images_of(read_tar(storage, key))  # noqa: E731
    elif reader == "botocore":
        client = s3_client(threads)
        keys = [f"objects/{size}/{index:06d}.jpg" for index in range(images)]
        read = lambda key: int(len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()) == size)  # noqa: E731
    else:
        keys = [f"objects/{size}/{index:06d}.jpg" for index in range(images)]
        read = lambda key: int(len(storage.read(key)) == size)  # noqa: E731
    sum(map_bounded(read, keys[: min(len(keys), 2 * threads)], threads))  # connections opened outside the clock
    cpu, wall = time.process_time(), time.perf_counter()
    count = sum(map_bounded(read, keys, threads))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"images": count, "cpu_s": cpu, "wall_s": wall}


def measure(reader: str, endpoint: str, images: int, size: int, threads: int) -> dict:
    env = {**os.environ, **LOOPBACK_ONLY_ENV, "METAFLOW_S3_ENDPOINT_URL": endpoint}
    command = [sys.executable, __file__, "--worker", reader, str(images), str(size), str(threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env, timeout=900)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        reader, images, size, threads = argv[1:]
        print(json.dumps(worker(reader, int(images), int(size), int(threads))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images read per measurement (default 2000)")
    parser.add_argument("--size", type=int, default=100_000, help="bytes per image (default 100 KB)")
    parser.add_argument("--threads", default="4,16,64", help="reader threads, comma-separated (default 4,16,64)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added by the server per request")
    parser.add_argument("--readers", default=",".join(READERS), help="a comma-separated subset of the readers")
    args = parser.parse_args(argv)
    print_machine_info("bench/feed.py: images/s and client CPU per image, reading a task's images from S3")
    print(
        f"server:   bench/getserver.py on 127.0.0.1, +{args.latency_ms:g} ms per request; {args.images} images of "
        f"{args.size // 1000} KB; tars of {IMAGES_PER_TAR}; each reader in its own process"
    )
    threads = [int(t) for t in args.threads.split(",")]
    results: dict[tuple[str, int], dict] = {}
    rows = []
    with get_server(args.latency_ms) as endpoint:
        for reader in args.readers.split(","):
            for count in threads:
                result = measure(reader, endpoint, args.images, args.size, count)
                assert result["images"] == (args.images // IMAGES_PER_TAR) * IMAGES_PER_TAR or "tar" not in reader
                results[reader, count] = result
                cpu_ms = 1000 * result["cpu_s"] / result["images"]
                rows.append((reader, count, round(result["images"] / result["wall_s"]), f"{cpu_ms:.4f}"))
                print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    print_table(["reader", "threads", "images/s", "client CPU ms/image"], rows)

    def cpu_ms(reader: str) -> float:
        return min(1000 * r["cpu_s"] / r["images"] for (name, _), r in results.items() if name == reader)

    def rate(reader: str, count: int) -> float:
        result = results[reader, count]
        return result["images"] / result["wall_s"]

    most, fewest = max(threads), min(threads)
    print(
        f"ratio: S3Storage.read {cpu_ms('S3Storage.read'):.3f} ms of client CPU per object vs botocore "
        f"{cpu_ms('botocore'):.3f} ms ({cpu_ms('botocore') / cpu_ms('S3Storage.read'):.1f}x less); target <= 0.3 ms"
    )
    print(
        f"ratio: S3Storage.read {rate('S3Storage.read', most) / rate('S3Storage.read', fewest):.1f}x the images/s with "
        f"{most} threads as with {fewest} (botocore {rate('botocore', most) / rate('botocore', fewest):.1f}x); "
        "target: grows with threads until the server or network is the limit"
    )
    print(
        f"ratio: tar shards {cpu_ms('tar shards'):.4f} ms of client CPU per image, of which "
        f"{cpu_ms('tar members from memory'):.4f} ms the reader's per-member work, the rest receiving the "
        f"bytes; target <= 0.02 ms"
    )


if __name__ == "__main__":
    main()
