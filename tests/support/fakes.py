"""Loopback fakes for fault injection: an EC2 metadata service and a flaky S3 proxy."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def fake_imds(notice_after_s: float, noticed_instances: int = 1) -> Iterator[str]:
    """IMDSv2 where each token is one "instance"; the first ``noticed_instances`` of them get a
    spot instance-action ``notice_after_s`` seconds after asking for their token, later ones
    (the retries, on fresh instances) never do."""
    tokens: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: str = "") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def do_PUT(self) -> None:
            token = f"token-{len(tokens)}"
            tokens[token] = time.monotonic()
            self._send(200, token)

        def do_GET(self) -> None:
            token = self.headers.get("X-aws-ec2-metadata-token", "")
            if token not in tokens:
                self._send(401)
            elif (
                self.path.endswith("/spot/instance-action")
                and int(token.split("-")[1]) < noticed_instances
                and time.monotonic() - tokens[token] >= notice_after_s
            ):
                self._send(200, json.dumps({"action": "terminate", "time": "2026-11-23T17:00:00Z"}))
            else:
                self._send(404)

    with serve(Handler) as url:
        yield url


@contextmanager
def flaky_s3_proxy(upstream: str, failure_rate: float, seed: int = 0) -> Iterator[str]:
    """Forward S3 requests to ``upstream``, answering a fraction with 503 SlowDown instead."""
    rng = random.Random(seed)
    lock = threading.Lock()
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                fail = rng.random() < failure_rate
            if fail:
                error = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "transfer-encoding")}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            self.send_response(response.status)
            # A HEAD answer keeps the object's Content-Length and has no body.
            skip = {"connection", "transfer-encoding"} | ({"content-length"} if self.command != "HEAD" else set())
            for name, value in response.getheaders():
                if name.lower() not in skip:
                    self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            connection.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    with serve(Handler) as url:
        yield url
