"""A loopback S3 API for the benches: moto, optionally behind a proxy that adds per-request latency.

    .venv/bin/python bench/s3server.py [--latency-ms 20]

Prints the endpoint (``http://127.0.0.1:PORT``) on the first line of stdout, then serves until
terminated. moto answers in well under a millisecond of network time, while a real S3 GET
waits ~10-50 ms for its first byte; ``--latency-ms`` puts a small HTTP/1.1 keep-alive proxy in
front of moto that sleeps that long before forwarding each request, so concurrency is measured
against a realistic round trip. Only 127.0.0.1 is ever listened on or connected to.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.server import ThreadedMotoServer

# Headers that describe one hop, not the message (RFC 9110 7.6.1); the proxy sets its own.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def latency_proxy(upstream_port: int, latency_s: float) -> ThreadingHTTPServer:
    """An HTTP proxy on 127.0.0.1 that forwards every request to moto after ``latency_s``."""
    connections = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like boto3's connection pool expects

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: one line per request would dominate the bench's output."""

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            time.sleep(latency_s)
            if not hasattr(connections, "upstream"):
                connections.upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            connections.upstream.request(self.command, self.path, body=body, headers=headers)
            response = connections.upstream.getresponse()
            payload = response.read()
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before each request (default 0)")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    _, port = moto.get_host_and_port()
    if args.latency_ms > 0:
        proxy = latency_proxy(port, args.latency_ms / 1000)
        port = proxy.server_address[1]
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{port}", flush=True)
    threading.Event().wait()  # until terminated


if __name__ == "__main__":
    main()
