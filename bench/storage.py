"""Reading a shard from S3: our threaded reader vs sequential ``get_object``, on a loopback moto.

    .venv/bin/python bench/storage.py [--objects 200] [--threads 16] [--latency-ms 20]

Ours is ``steps.io.concurrency.map_bounded`` over ``S3Storage.read`` (what PreprocessFlow and
InferFlow do per shard); the baseline is one boto3 client calling ``get_object`` in a loop. Both
read the same objects (random bytes, 100 KB-1 MB) from a moto S3 server in its own process on
127.0.0.1, first as it is (moto answers at once; both sides are then bound by this machine's
CPU), then behind a proxy adding ``--latency-ms`` per request, like a real S3 GET's first byte
(~10-50 ms). Each figure is the best of ``--repeats`` runs, measured in this run.
"""

from __future__ import annotations

import argparse
import os
import random

import boto3
from common import best_seconds, print_machine_info, print_table, s3_server

from steps.io.concurrency import map_bounded
from steps.io.s3_storage import S3Storage
from tests.support.offline import LOOPBACK_ONLY_ENV

BUCKET = "bench"


def sequential_read(client, keys: list[str]) -> int:
    return sum(len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()) for key in keys)


def threaded_read(storage: S3Storage, keys: list[str], threads: int) -> int:
    return sum(len(data) for data in map_bounded(storage.read, keys, threads))


def measure(endpoint: str, objects: list[bytes], threads: int, repeats: int) -> tuple[float, float]:
    """Seconds for (sequential, ours) reading every object once from ``endpoint``."""
    os.environ["METAFLOW_S3_ENDPOINT_URL"] = endpoint  # where S3Storage's client goes
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    storage = S3Storage(f"s3://{BUCKET}/shard", max_connections=threads)
    keys = [f"{i:05d}.jpg" for i in range(len(objects))]
    list(map_bounded(lambda item: storage.write(*item), zip(keys, objects, strict=True), threads))
    full_keys = [f"shard/{key}" for key in keys]
    sequential_read(client, full_keys[:2])  # open the connections outside the timing
    threaded_read(storage, keys[: 2 * threads], threads)
    sequential, threaded = best_seconds(
        [lambda: sequential_read(client, full_keys), lambda: threaded_read(storage, keys, threads)], repeats
    )
    return sequential, threaded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=200, help="objects in the shard (default 200)")
    parser.add_argument("--threads", type=int, default=16, help="reader threads (the flows' default 16)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulated first-byte latency (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the best counts")
    args = parser.parse_args(argv)
    os.environ.update(LOOPBACK_ONLY_ENV)

    print_machine_info("bench/storage.py: reading one shard from S3, threaded vs sequential")
    rng = random.Random(0)
    objects = [rng.randbytes(rng.randint(100_000, 1_000_000)) for _ in range(args.objects)]
    megabytes = sum(map(len, objects)) / 1e6
    print(
        f"objects:  {len(objects)} of 100 KB-1 MB ({megabytes:.0f} MB); moto S3 server on 127.0.0.1 in its own "
        f"process; {args.threads} reader threads; best of {args.repeats}"
    )
    rows, ratios = [], []
    for latency in (0.0, args.latency_ms):
        with s3_server(latency) as endpoint:
            sequential, threaded = measure(endpoint, objects, args.threads, args.repeats)
        setting = f"+{latency:g} ms per request" if latency else "moto as is"
        ratios.append(f"{sequential / threaded:.1f}x ({setting})")
        for label, seconds in (
            ("sequential get_object", sequential),
            (f"map_bounded x S3Storage.read, {args.threads} threads", threaded),
        ):
            rows.append(
                (setting, label, seconds, len(objects) / seconds, megabytes / seconds, f"{sequential / seconds:.1f}x")
            )
    print_table(["server", "reader", "seconds", "objects/s", "MB/s", "vs sequential"], rows)
    print(f"ratio: {', '.join(ratios)}; target >= 4x")


if __name__ == "__main__":
    main()
