"""Which S3 client reads one object per image cheapest: botocore, obstore, s3torchconnector, awscrt.

    .venv/bin/python bench/object_readers.py [--gets 800] [--threads 16,64]

Each candidate GETs the same objects (10 KB and 150 KB) from ``bench/getserver.py`` on 127.0.0.1
(answers at once; then +20 ms per request, like a real S3 first byte), on a thread pool as
``map_bounded`` does, in a fresh process of its own. Reported per candidate: client CPU per GET
(``time.process_time`` of the whole client process, every thread, native ones included, over
the timed GETs), and GET/s. CPU per GET is what carries to a bigger machine; GET/s here is
bound by this machine's few shared cores and the one-loop Python server, so it needs an idle
machine to mean more than "grows with threads, or not". A candidate that is not installed, or
fails, prints why instead of a row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.offline import LOOPBACK_ONLY_ENV

BUCKET = "bench"
CANDIDATES = ("botocore", "obstore", "s3torchconnector", "awscrt", "ours")


def botocore_get(endpoint: str, threads: int) -> Callable[[str], bytes]:
    from steps.io.s3_storage import s3_client

    client = s3_client(threads)
    return lambda key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def obstore_get(endpoint: str, threads: int) -> Callable[[str], bytes]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "pool_max_idle_per_host": str(threads)},
    )
    return lambda key: obstore.get(store, key).bytes().to_bytes()


def s3torchconnector_get(endpoint: str, threads: int) -> Callable[[str], bytes]:
    from s3torchconnectorclient._mountpoint_s3_client import MountpointS3Client

    client = MountpointS3Client("us-east-1", endpoint=endpoint, force_path_style=True)
    return lambda key: b"".join(client.get_object(BUCKET, key))


def awscrt_get(endpoint: str, threads: int) -> Callable[[str], bytes]:
    from awscrt.auth import AwsCredentialsProvider
    from awscrt.http import HttpHeaders, HttpRequest
    from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup
    from awscrt.s3 import S3Client, S3RequestTlsMode, S3RequestType, create_default_s3_signing_config

    host = endpoint.removeprefix("http://")
    loops = EventLoopGroup(2)
    bootstrap = ClientBootstrap(loops, DefaultHostResolver(loops))
    credentials = AwsCredentialsProvider.new_static(
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    )
    signing = create_default_s3_signing_config(region="us-east-1", credential_provider=credentials)
    client = S3Client(
        bootstrap=bootstrap, region="us-east-1", signing_config=signing, tls_mode=S3RequestTlsMode.DISABLED
    )

    def get(key: str) -> bytes:
        chunks: list[bytes] = []
        request = HttpRequest("GET", f"/{BUCKET}/{key}", HttpHeaders([("Host", host)]))
        done = client.make_request(
            type=S3RequestType.GET_OBJECT, request=request, on_body=lambda chunk, offset, **_: chunks.append(chunk)
        )
        done.finished_future.result()
        return b"".join(chunks)

    return get


def ours_get(endpoint: str, threads: int) -> Callable[[str], bytes]:
    from steps.io.s3_storage import S3Storage

    return S3Storage(f"s3://{BUCKET}", max_connections=threads).read


def worker(candidate: str, endpoint: str, size: int, threads: int, gets: int) -> dict:
    """In the candidate's own process: client CPU and wall seconds for ``gets`` GETs on ``threads``."""
    os.environ["METAFLOW_S3_ENDPOINT_URL"] = endpoint
    get = globals()[f"{candidate}_get"](endpoint, threads)
    keys = [f"objects/{size}/{index:06d}.jpg" for index in range(gets)]
    with ThreadPoolExecutor(threads) as pool:
        warm = list(pool.map(get, keys[: 2 * threads]))  # connections opened outside the timing
        if any(len(data) != size for data in warm):
            raise RuntimeError(f"read {sorted({len(d) for d in warm})} bytes, expected {size}")
        cpu, wall = time.process_time(), time.perf_counter()
        total = sum(len(data) for data in pool.map(get, keys))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert total == size * gets
    return {"cpu_ms_per_get": 1000 * cpu / gets, "gets_per_s": gets / wall}


@contextmanager
def get_server(latency_ms: float):
    script = Path(__file__).with_name("getserver.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True
    )
    try:
        endpoint = process.stdout.readline().strip()
        if not endpoint.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"GET server did not start (said {endpoint!r})")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(candidate: str, endpoint: str, size: int, threads: int, gets: int) -> dict | str:
    env = {**os.environ, **LOOPBACK_ONLY_ENV}
    command = [sys.executable, __file__, "--worker", candidate, endpoint, str(size), str(threads), str(gets)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"failed: {last[:100]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        candidate, endpoint, size, threads, gets = argv[1:]
        print(json.dumps(worker(candidate, endpoint, int(size), int(threads), int(gets))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gets", type=int, default=800, help="timed GETs per measurement (default 800)")
    parser.add_argument("--threads", default="16,64", help="reader threads, comma-separated (default 16,64)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the second server's added latency")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    args = parser.parse_args(argv)
    from common import print_machine_info, print_table

    print_machine_info("bench/object_readers.py: client CPU per GET and GET/s, one object per image")
    print(f"server:   bench/getserver.py on 127.0.0.1 (one asyncio loop, own process); {args.gets} timed GETs")
    rows = []
    for latency in (0.0, args.latency_ms):
        with get_server(latency) as endpoint:
            for size in (10_000, 150_000):
                for threads in map(int, args.threads.split(",")):
                    for candidate in args.candidates.split(","):
                        result = measure(candidate, endpoint, size, threads, args.gets)
                        setting = f"+{latency:g} ms" if latency else "at once"
                        if isinstance(result, str):
                            rows.append((setting, f"{size // 1000} KB", threads, candidate, result, ""))
                        else:
                            rows.append(
                                (
                                    setting,
                                    f"{size // 1000} KB",
                                    threads,
                                    candidate,
                                    round(result["cpu_ms_per_get"], 3),
                                    round(result["gets_per_s"]),
                                )
                            )
                        print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    print_table(["server", "object", "threads", "client", "client CPU ms/GET", "GET/s"], rows)


if __name__ == "__main__":
    main()
