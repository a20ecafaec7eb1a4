"""Planning at scale: streaming planner vs the in-memory one on local disk; parallel S3 listing vs
the sequential paginator behind simulated latency.

    .venv/bin/python bench/scale.py [--local 10000,100000,1000000] [--s3 20000] [--latency-ms 20,200]

Local: N empty files with sha256 names; each planner runs in its own process (so its peak RSS is
its own) and plans like ``start`` does (shards sized by --task-minutes, key lists written):
ours is ``prepare_run`` (parallel scandir, counts + spill, shards written as they complete);
the baseline is what main did before (a sorted list of every object, ``plan_shards`` in memory).

S3: moto re-sorts the whole bucket on every LIST (O(N) a page, ~1 s a page at 3,000 keys here),
which real S3 does not, so moto is measured only at ``--moto-keys`` to show that cost; the
figures that count come from ``bench/listserver.py`` (N keys, each LIST answered by bisection in
O(page), in its own process), first as it is, then adding ``--latency-ms`` to every request
like a real S3 round trip. LIST requests and the most in flight at once are counted from
botocore's own events.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from common import print_machine_info, print_table, s3_server

from steps.cost.throughput import image_cost, images_for, read_throughput
from steps.io.concurrency import map_bounded
from steps.io.local_storage import LocalStorage
from steps.io.s3_storage import S3Storage, s3_client
from steps.planning.prefixes import ShardRange
from steps.planning.run_plan import prepare_run
from steps.planning.store import write_shard_keys
from tests.support.offline import LOOPBACK_ONLY_ENV
from tests.support.plans import plan_shards

BUCKET = "scale-bench"
REAL_S3_PAGE_SECONDS = 0.2  # a real ListObjectsV2 page of 1,000 keys: 0.1-0.3 s


def sha_name(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest() + ".jpg"


def make_files(directory: Path, count: int) -> None:
    directory.mkdir(parents=True)
    for i in range(count):
        os.close(os.open(directory / sha_name(i), os.O_CREAT | os.O_WRONLY, 0o644))


def child_plan(planner: str, source: str, output: str) -> None:
    """Run one planner in this process and print its seconds and peak RSS as JSON."""
    cost = image_cost(read_throughput(), "preprocess", vcpus=4)
    began = time.perf_counter()
    if planner == "streaming":
        plan = prepare_run(source, output, shard_size=0, max_shards=65_536, prefix_width=0, threads=4, cost=cost)
        shards, images = len(plan.shards), plan.images
    else:  # main before: every object listed into one sorted list, planned in memory
        walked = ((Path(d, f), Path(d, f).stat().st_size) for d, _, names in os.walk(source) for f in names)
        objects = sorted((path.relative_to(source).as_posix(), size) for path, size in walked)
        planned = plan_shards([k for k, _ in objects], images_for(10, cost), 65_536)
        ranges = ((ShardRange(s.name, 0, 0, len(s)), list(s.keys)) for s in planned.shards)
        shards, images = len(write_shard_keys(LocalStorage(output), ranges, 4)), planned.images
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "shards": shards, "images": images}))


def run_child(planner: str, source: Path, output: Path) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", planner, str(source), str(output)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_local(sizes: list[int], scratch: Path) -> None:
    rows = []
    for count in sizes:
        source = scratch / f"in-{count}"
        made = time.perf_counter()
        make_files(source, count)
        print(f"local:    {count} files made in {time.perf_counter() - made:.0f} s", flush=True)
        for planner in ("in-memory (main before)", "streaming (ours)"):
            kind = planner.split()[0]
            out = run_child(kind, source, scratch / f"out-{kind}-{count}")
            rows.append((count, planner, out["seconds"], out["peak_mb"], out["shards"], count / out["seconds"]))
            print(f"local:    {count} {planner}: {out['seconds']:.1f} s, {out['peak_mb']:.0f} MB", flush=True)
        for done in (source, scratch / f"out-in-memory-{count}", scratch / f"out-streaming-{count}"):
            subprocess.run(["rm", "-rf", str(done)], check=True)
    print_table(["keys", "planner", "seconds", "peak RSS MB", "shards", "keys/s"], rows)
    ours = [r for r in rows if r[1].startswith("streaming")]
    largest = ours[-1]
    print(
        f"local 10^8: {largest[5]:,.0f} keys/s (at {largest[0]:,}) -> {1e8 / largest[5] / 60:.0f} minutes "
        f"(linear in keys); peak RSS {ours[0][3]:.0f} MB at {ours[0][0]:,} keys and {largest[3]:.0f} MB at "
        f"{largest[0]:,} keys (a buffer plus a few shards, not the key list)"
    )


class ListCounter:
    """LIST requests and the most in flight, from a client's botocore events."""

    def __init__(self, client) -> None:
        self.requests = self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3.ListObjectsV2", self._before)
        client.meta.events.register("after-call.s3.ListObjectsV2", self._after)

    def _before(self, **_) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _after(self, **_) -> None:
        with self._lock:
            self.in_flight -= 1


def fill_bucket(endpoint: str, count: int) -> None:
    os.environ["METAFLOW_S3_ENDPOINT_URL"] = endpoint  # where S3Storage's client goes
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    writer = S3Storage(f"s3://{BUCKET}/in", max_connections=32)
    list(map_bounded(lambda i: writer.write(sha_name(i), b""), range(count), 32))


def list_sequentially(endpoint: str, client_settings: bool = False) -> tuple[float, int, ListCounter]:
    """The peer: boto3's paginator, with a default client or (``client_settings``) S3Storage's
    (timestamps unparsed), which leaves the parallel ranges as the only difference."""
    client = s3_client() if client_settings else boto3.client("s3", endpoint_url=endpoint)
    counted = ListCounter(client)
    began = time.perf_counter()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="in/")
    listed = sum(len(page.get("Contents", [])) for page in pages)
    return time.perf_counter() - began, listed, counted


def list_in_ranges(threads: int) -> tuple[float, int, ListCounter]:
    storage = S3Storage(f"s3://{BUCKET}/in", max_connections=threads)
    counted = ListCounter(storage._client)
    began = time.perf_counter()
    listed = sum(len(page) for page in storage.pages())
    return time.perf_counter() - began, listed, counted


@contextmanager
def list_endpoint(keys: int, latency_ms: float) -> Iterator[str]:
    """``bench/listserver.py`` in its own process: N keys under in/, LISTs in O(page)."""
    script = Path(__file__).with_name("listserver.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--keys", str(keys), "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(setting: str, endpoint: str, threads: int, rows: list) -> tuple[float, float]:
    """The listers against ``endpoint``; returns sequential / ours for the default-client
    paginator and for the paginator on S3Storage's client, and adds their rows."""
    os.environ["METAFLOW_S3_ENDPOINT_URL"] = endpoint  # where S3Storage's client goes
    sequential, listed, counted = list_sequentially(endpoint)
    rows.append((setting, "sequential paginator", sequential, listed, counted.requests, counted.max_in_flight))
    same_client, listed, counted = list_sequentially(endpoint, client_settings=True)
    rows.append((setting, "paginator, S3Storage's client", same_client, listed, counted.requests, 1))
    ours, listed, counted = list_in_ranges(threads)
    rows.append((setting, f"S3Storage.pages, {threads} threads", ours, listed, counted.requests, counted.max_in_flight))
    return sequential / ours, same_client / ours


def bench_s3(count: int, moto_keys: int, latencies_ms: list[float], threads: int) -> None:
    rows: list = []
    ratios, parallel_only = [], []
    settings = [
        (f"O(page) server, {count} keys, +{latency:g} ms", f"+{latency:g} ms", latency)
        for latency in (0.0, *latencies_ms)
    ]
    if moto_keys:
        settings.insert(0, (f"moto as is, {moto_keys} keys", "moto", None))
    for setting, label, latency in settings:
        with s3_server(0.0) if latency is None else list_endpoint(count, latency) as endpoint:
            if latency is None:
                fill_bucket(endpoint, moto_keys)
            peer, same_client = measure(setting, endpoint, threads, rows)
        ratios.append(f"{peer:.1f}x ({label})")
        parallel_only.append(f"{same_client:.1f}x ({label})")
    print_table(["server", "lister", "seconds", "keys", "LIST requests", "most in flight"], rows)
    sequential_row = rows[-3]
    page_seconds = sequential_row[2] / max(1, sequential_row[4])
    # Parsing a page's XML (botocore) is CPU in this process: threads overlap waiting, not that.
    no_latency = next(r for r in rows if r[0].endswith("+0 ms") and r[1].startswith("S3Storage"))
    parse_floor = no_latency[2] / no_latency[3] * 1000  # seconds per 1,000 keys when nothing waits
    busy = 1e8 / 1000 * REAL_S3_PAGE_SECONDS  # seconds of LIST pages for 10^8 keys
    print(
        f"s3 10^8:  10^5 pages x {REAL_S3_PAGE_SECONDS} s = {busy / 3600:.1f} h sequential; {threads} ranges at "
        f"once = {busy / threads / 60:.0f} min of waiting, but parsing costs {parse_floor * 1000:.0f} ms of this "
        f"process's CPU a page here = {1e5 * parse_floor / 3600:.1f} h, the real floor on this machine "
        f"(a sequential page took {page_seconds * 1000:.0f} ms at +{latencies_ms[-1]:g} ms)"
    )
    print(f"ratio: listing {', '.join(ratios)} vs the sequential paginator; target >= 8x at 2x10^4 keys, +20 ms")
    print(f"ratio: listing {', '.join(parallel_only)} vs the paginator on the same client (parallel ranges alone)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local", default="10000,100000,1000000", help="local key counts, comma-separated ('' skips)")
    parser.add_argument("--s3", type=int, default=20_000, help="keys on the O(page) list server (0 skips S3)")
    parser.add_argument("--moto-keys", type=int, default=3_000, help="keys in moto, to show its own cost (0 skips)")
    parser.add_argument("--latency-ms", default="20,200", help="simulated latencies per S3 request, comma-separated")
    parser.add_argument("--threads", type=int, default=16, help="S3 listing threads (the flows' --threads)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_plan(*args.child)
        return
    os.environ.update(LOOPBACK_ONLY_ENV)
    print_machine_info("bench/scale.py: planning and listing at scale")
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as scratch:
        if args.local:
            bench_local([int(n) for n in args.local.split(",")], Path(scratch))
    if args.s3:
        bench_s3(args.s3, args.moto_keys, [float(x) for x in args.latency_ms.split(",")], args.threads)


if __name__ == "__main__":
    main()
