"""A loopback S3 GET server for throughput benches: answers every GET at once, after optional latency.

    .venv/bin/python bench/getserver.py [--latency-ms 20]

moto spends milliseconds of Python per request, so behind it a client's GET rate measures moto.
This server is one asyncio loop answering ``GET``/``HEAD /<bucket>/<key>`` (path-style, any
signature accepted) with a body whose size the key names: ``<anything>/<size in bytes>/<name>``
returns that many bytes, the same bytes for the same size; a key ending in ``.tar`` under
``tars/<images>x<size>/`` returns a tar of that many members of that size. ``Range`` requests are
answered with 206, as the CRT clients ask for parts. ``--latency-ms`` sleeps (without blocking
other requests) before each answer, like a real S3 GET's first byte. Prints the endpoint on the
first line of stdout. Only 127.0.0.1 is listened on.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import re
import tarfile

_HEADERS = 'ETag: "0"\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\nAccept-Ranges: bytes\r\n'
_TAR = re.compile(r"tars/(\d+)x(\d+)/")


@functools.cache
def body_of(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


@functools.cache
def tar_of(images: int, size: int) -> bytes:
    """A WebDataset-like tar: ``images`` members ``NNNNNN.jpg`` of ``size`` bytes each."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for index in range(images):
            info = tarfile.TarInfo(f"{index:06d}.jpg")
            info.size = size
            tar.addfile(info, io.BytesIO(body_of(size)))
    return buffer.getvalue()


def object_for(path: str) -> bytes | None:
    key = path.split("?", 1)[0]
    tar = _TAR.search(key)
    if tar and key.endswith(".tar"):
        return tar_of(int(tar.group(1)), int(tar.group(2)))
    parts = key.strip("/").split("/")
    if len(parts) >= 3 and parts[-2].isdigit():
        return body_of(int(parts[-2]))
    return None


def response(method: str, path: str, headers: dict[str, str]) -> bytes:
    body = object_for(path)
    if body is None:
        message = b"<Error><Code>NoSuchKey</Code></Error>"
        head = f"HTTP/1.1 404 Not Found\r\nContent-Length: {len(message)}\r\nContent-Type: application/xml\r\n\r\n"
        return head.encode() + (message if method != "HEAD" else b"")
    status, extra = "200 OK", ""
    total = len(body)
    ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("range", ""))
    if ranged:
        start = int(ranged.group(1))
        end = min(int(ranged.group(2) or total - 1), total - 1)
        body = body[start : end + 1]
        status, extra = "206 Partial Content", f"Content-Range: bytes {start}-{end}/{total}\r\n"
    head = f"HTTP/1.1 {status}\r\n{_HEADERS}{extra}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + (body if method != "HEAD" else b"")


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency_s: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            length = int(headers.get("content-length") or 0)
            if length:
                await reader.readexactly(length)
            if latency_s:
                await asyncio.sleep(latency_s)
            writer.write(response(method, path, headers))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main_async(latency_s: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, latency_s), "127.0.0.1", 0, backlog=1024, limit=1 << 16
    )
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before each answer (default 0)")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.latency_ms / 1000))


if __name__ == "__main__":
    main()
