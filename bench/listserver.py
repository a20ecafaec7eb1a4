"""A loopback ListObjectsV2 server over N sha256 keys, for benching listing without moto's cost.

    .venv/bin/python bench/listserver.py --keys 20000 [--latency-ms 20]

moto re-sorts the whole bucket on every LIST (O(N) a page: ~1 s a page at a few thousand keys on
this machine), which real S3 does not. This server holds ``in/<sha256>.jpg`` for i < N in one
sorted list and answers each LIST by bisection (O(page)), after sleeping ``--latency-ms``
like a real S3 round trip, so a listing's time is its round trips. It answers ListObjectsV2
(prefix, start-after, continuation-token, max-keys; no delimiter) and nothing else. Prints the
endpoint on the first line of stdout. Only 127.0.0.1 is listened on.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape


def list_server(keys: list[str], latency_s: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: one line per request would dominate the bench's output."""

        def do_GET(self) -> None:
            time.sleep(latency_s)
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            prefix = query.get("prefix", "")
            after = max(query.get("continuation-token", ""), query.get("start-after", ""))
            limit = min(int(query.get("max-keys", 1000)), 1000)
            start = bisect.bisect_right(keys, after) if after else bisect.bisect_left(keys, prefix)
            page = [k for k in keys[start : start + limit + 1] if k.startswith(prefix)]
            truncated = len(page) > limit
            page = page[:limit]
            token = f"<NextContinuationToken>{escape(page[-1])}</NextContinuationToken>" if truncated else ""
            contents = "".join(
                f"<Contents><Key>{escape(k)}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>"
                f'<ETag>"0"</ETag><Size>0</Size><StorageClass>STANDARD</StorageClass></Contents>'
                for k in page
            )
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Name>bench</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount>"
                f"<MaxKeys>{limit}</MaxKeys><IsTruncated>{str(truncated).lower()}</IsTruncated>{token}{contents}"
                "</ListBucketResult>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    keys = sorted(f"in/{hashlib.sha256(str(i).encode()).hexdigest()}.jpg" for i in range(args.keys))
    server = list_server(keys, args.latency_ms / 1000)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
