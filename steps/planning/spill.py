"""Keys on their way from the listing to their shards, held on local disk instead of in memory.

The shard layout depends on how many keys there are, which is known only after the listing,
and keys with non-digest names reach their shard by a hash, not in listing order. So each key
is counted (``PrefixCounts``) and appended to one of 4,096 bucket files by its prefix as it
arrives; once the layout is chosen, the buckets are read back in prefix order and each shard's
keys are sorted and handed on as soon as the shard is complete. Memory stays bounded by the
write buffer plus the shards that straddle the current bucket, whatever the dataset size; the
disk holds each key once (~80 bytes).
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from json.encoder import encode_basestring  # the C encoder json.dumps(ensure_ascii=False) uses
from pathlib import Path

from steps.planning.prefixes import MAX_WIDTH, PrefixCounts, ShardRange, cell_of

BUCKET_WIDTH = 3  # 4,096 bucket files: one holds 1/4096 of the keys (24k of 10^8)
_CELLS_PER_BUCKET = 16 ** (MAX_WIDTH - BUCKET_WIDTH)
# A local file name that is not valid UTF-8 reaches Python with surrogate escapes: keep its bytes.
_UNDECODABLE = "surrogateescape"


def encode_key(key: str) -> bytes:
    """One key as one line: JSON escapes newlines and every other character that could split it."""
    return (encode_basestring(key) + "\n").encode(errors=_UNDECODABLE)


def _json_lines(lines: list[str]) -> list[str]:
    """Parse many JSON-string lines in one call (the C parser, once) instead of one call each."""
    return json.loads("[" + ",".join(lines) + "]") if lines else []


def decode_keys(data: bytes) -> list[str]:
    # Split on "\n" only: str.splitlines would also split on U+2028 and others JSON leaves raw.
    return _json_lines([line for line in data.decode(errors=_UNDECODABLE).split("\n") if line])


class KeySpill:
    """Count keys and park them in bucket files under ``directory`` (a fresh temporary directory).

    ``buffer_bytes`` bounds what is held before the buckets are appended to.
    """

    def __init__(self, directory: str | os.PathLike[str], buffer_bytes: int = 16 << 20) -> None:
        self.directory = Path(directory)
        self.buffer_bytes = buffer_bytes
        self.counts = PrefixCounts()
        self.input_bytes = 0
        self._buffers: dict[int, list[bytes]] = {}
        self._buffered = 0

    def add(self, key: str, size: int, weight: int = 1) -> None:
        """Park ``key``; ``weight`` is what it counts for in the layout (1 image, or a tar's bytes)."""
        cell = cell_of(key)
        self.counts.add(cell, weight)
        self.input_bytes += size
        line = (f"{cell:04x}" + encode_basestring(key) + "\n").encode(errors=_UNDECODABLE)
        self._buffers.setdefault(cell // _CELLS_PER_BUCKET, []).append(line)
        self._buffered += len(line)
        if self._buffered >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        for bucket, lines in self._buffers.items():
            with open(self._bucket_path(bucket), "ab") as f:
                f.write(b"".join(lines))
        self._buffers.clear()
        self._buffered = 0

    def _bucket_path(self, bucket: int) -> Path:
        return self.directory / f"{bucket:0{BUCKET_WIDTH}x}.jsonl"

    def _read_bucket(self, bucket: int) -> Iterable[tuple[int, str]]:
        """A bucket's keys: what was appended to its file, then what is still buffered (a
        dataset that fits in the buffer never touches the disk)."""
        path = self._bucket_path(bucket)
        data = path.read_bytes() if path.exists() else b""
        data += b"".join(self._buffers.pop(bucket, ()))
        lines = [line for line in data.decode(errors=_UNDECODABLE).split("\n") if line]
        cells = [int(line[:MAX_WIDTH], 16) for line in lines]
        return zip(cells, _json_lines([line[MAX_WIDTH:] for line in lines]), strict=True)

    def shard_keys(self, ranges: Sequence[ShardRange]) -> Iterator[tuple[ShardRange, list[str]]]:
        """Each range (sorted by cell) with its sorted, de-duplicated keys, in range order.

        A range is yielded as soon as the last bucket it overlaps has been read, so only the
        ranges overlapping the current bucket are held.
        """
        firsts = [r.first for r in ranges]
        open_keys: dict[int, set[str]] = {}
        done = 0
        for bucket in range(16**BUCKET_WIDTH):
            for cell, key in self._read_bucket(bucket):
                index = bisect.bisect_right(firsts, cell) - 1
                if index < 0 or not ranges[index].holds(cell):
                    raise ValueError(f"key {key!r} (cell {cell:04x}) lies in no shard of the layout")
                open_keys.setdefault(index, set()).add(key)
            bucket_last = (bucket + 1) * _CELLS_PER_BUCKET - 1
            while done < len(ranges) and ranges[done].last <= bucket_last:
                yield ranges[done], sorted(open_keys.pop(done, ()))
                done += 1
