"""Listing that scales: many directories or key ranges listed at once, pages handed on as they come.

A sequential S3 paginator lists 10^8 keys as 10^5 pages one after another (hours at 0.1-0.3 s a
page). Here the keyspace under a prefix is cut into disjoint ranges that together cover it,
and a bounded pool lists the ranges in parallel. sha256 names are spread evenly over hex
prefixes, so one range per hex prefix is balanced; other layouts are split by their
directories (``Delimiter="/"``) first. Pages come out in no particular order, through a bounded
queue: memory holds a few pages, never the listing.

Locally, directories are scanned in parallel with ``os.scandir``. No entry stops the listing:
anything that is not a directory is listed (a dangling or looping symlink, a symlink to a
directory, a FIFO, a file without permission) and a directory that cannot be scanned is
listed as a key itself, so reading it later makes it a reported reject with its reason.
"""

from __future__ import annotations

import math
import os
import queue
import string
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAGE = 1000  # keys per page: what one S3 LIST returns
_HEX = set(string.hexdigits.lower())
_AFTER_EVERYTHING = "\U0010ffff"  # the highest code point: p + it sorts after every real key starting p


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object, ``key`` relative to the listed root, ``size`` in bytes."""

    key: str
    size: int


Page = list[ObjectInfo]
# A task lists its part and may add more tasks; it returns the pages it found.
Task = Callable[[Callable[["Task"], None]], Iterator[Page]]


def crawl(seeds: list[Task], threads: int) -> Iterator[Page]:
    """Run ``seeds`` and the tasks they add on ``threads`` workers, yielding pages as they come.

    At most ``2 * threads`` pages wait for the consumer; workers block until it catches up. An
    error in a task is raised to the consumer. Closing the generator stops the workers.
    """
    tasks: queue.Queue = queue.Queue()
    pages: queue.Queue = queue.Queue(maxsize=2 * threads)
    stop = threading.Event()
    pending = len(seeds)
    lock = threading.Lock()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def add(task: Task) -> None:
        nonlocal pending
        with lock:
            pending += 1
        tasks.put(task)

    def work() -> None:
        nonlocal pending
        # None (one per worker, queued when the consumer is done) ends a worker at once: a poll
        # with a timeout would add it to every listing, and a rerun lists several times.
        while (task := tasks.get()) is not None and not stop.is_set():
            try:
                for page in task(add):
                    put(page)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
                put(err)
            with lock:
                pending -= 1
                finished = pending == 0
            if finished:
                put(None)

    for seed in seeds:
        tasks.put(seed)
    if not seeds:
        return
    workers = [threading.Thread(target=work, name="spot-batch-list", daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        while (item := pages.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        for _ in workers:
            tasks.put(None)
        for worker in workers:
            worker.join()


# Local directories


def local_pages(root: Path, prefix: str, skip: Callable[[str], bool], threads: int) -> Iterator[Page]:
    """Every entry under ``root`` whose key starts with ``prefix``, except names ``skip`` rejects."""
    start = root / prefix if prefix.endswith("/") else root / os.path.dirname(prefix)
    if not start.is_dir():
        return iter(())
    base = str(root) + os.sep  # entry paths start with it: slicing is much cheaper than Path.relative_to

    def scan(directory: Path) -> Task:
        def run(add: Callable[[Task], None]) -> Iterator[Page]:
            page: Page = []
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            add(scan(Path(entry.path)))
                        elif not skip(entry.name):
                            page.append(ObjectInfo(entry.path[len(base) :], _size(entry)))
                            if len(page) >= PAGE:
                                yield [e for e in page if e.key.startswith(prefix)]
                                page = []
            except OSError:  # cannot be scanned (permission denied, gone): listed itself, rejected when read
                if directory == start:
                    raise
                page.append(ObjectInfo(directory.relative_to(root).as_posix(), 0))
            yield [e for e in page if e.key.startswith(prefix)]

        return run

    return crawl([scan(start)], threads)


def _size(entry: os.DirEntry) -> int:
    """The size of what the entry points to; 0 when that cannot be read (the read rejects it)."""
    try:
        return entry.stat().st_size if entry.is_file() else 0
    except OSError:
        return 0


# S3 key ranges


def _hex_like(names: list[str]) -> bool:
    """Do most names start with two lowercase hex characters (sha256 digests)?"""
    hexed = sum(1 for n in names if len(n) >= 2 and n[0] in _HEX and n[1] in _HEX)
    return bool(names) and hexed >= 0.9 * len(names)


def range_starts(within: str, last: str, threads: int) -> list[str]:
    """Starts of key ranges covering everything under ``within`` after ``last``, the last key of
    a first page of hex-named keys. Where that page ended estimates how many pages are left, and
    the rest of the hex keyspace is cut into about 1.25 ranges a page (at least ``threads``, at
    most 4,096), so most ranges take one LIST and all of them run at once where threads allow."""
    cell = int(last[len(within) :][:4], 16)
    left = 16**4 - 1 - cell
    pages_left = left / (cell + 1)
    count = min(max(threads, math.ceil(1.25 * pages_left)), 4096, left)
    cells = sorted({cell + 1 + j * left // count for j in range(1, count)})
    # last + "\0" is the first string after ``last``; ``within + "g"`` is past every hex name.
    return [last + "\0", *(within + f"{c:04x}" for c in cells), within + "g"]


def _start_after(lo: str) -> str:
    """A ``StartAfter`` just below ``lo``: ``lo`` minus one on its last character, then the top."""
    return lo[:-1] if lo[-1] == "\0" else lo[:-1] + chr(ord(lo[-1]) - 1) + _AFTER_EVERYTHING


def s3_pages(client: Any, bucket: str, root: str, prefix: str, threads: int) -> Iterator[Page]:
    """Every object under ``root + prefix`` in bucket ``bucket``, keys relative to ``root``."""

    def page_of(contents: list[dict]) -> Page:
        return [ObjectInfo(o["Key"][len(root) :], o["Size"]) for o in contents]

    def key_range(within: str, lo: str, hi: str | None) -> Task:
        """Keys under ``within`` with ``lo <= key < hi`` (``hi`` None: to the end)."""

        def run(add: Callable[[Task], None]) -> Iterator[Page]:
            args = {"Bucket": bucket, "Prefix": within, "MaxKeys": PAGE}
            if lo > within:
                args["StartAfter"] = _start_after(lo)
            while True:
                reply = client.list_objects_v2(**args)
                contents = reply.get("Contents", [])
                inside = [o for o in contents if o["Key"] >= lo and (hi is None or o["Key"] < hi)]
                yield page_of(inside)
                if not reply.get("IsTruncated") or (hi is not None and contents and contents[-1]["Key"] >= hi):
                    return
                args["ContinuationToken"] = reply["NextContinuationToken"]

        return run

    def directory(within: str, depth: int) -> Task:
        """Probe one page; list a small prefix whole, split a large one into ranges or directories."""

        def run(add: Callable[[Task], None]) -> Iterator[Page]:
            first = client.list_objects_v2(Bucket=bucket, Prefix=within, MaxKeys=PAGE)
            contents = first.get("Contents", [])
            if not first.get("IsTruncated"):
                yield page_of(contents)
                return
            names = [o["Key"][len(within) :] for o in contents]
            if _hex_like(names) and all(c in _HEX for c in names[-1][:4]) and len(names[-1]) >= 4:
                yield page_of(contents)  # the probe's keys are done; ranges cover what is after them
                starts = range_starts(within, contents[-1]["Key"], threads)
                for lo, hi in zip(starts, [*starts[1:], None], strict=True):
                    add(key_range(within, lo, hi))
                return
            if depth >= 2:  # deep and not hex-named: the rest in one sequential range
                yield page_of(contents)
                add(key_range(within, contents[-1]["Key"] + "\0", None))
                return
            yield from _by_directory(within, depth, add)

        return run

    def _by_directory(within: str, depth: int, add: Callable[[Task], None]) -> Iterator[Page]:
        args = {"Bucket": bucket, "Prefix": within, "Delimiter": "/", "MaxKeys": PAGE}
        while True:
            reply = client.list_objects_v2(**args)
            for common in reply.get("CommonPrefixes", []):
                add(directory(common["Prefix"], depth + 1))
            yield page_of(reply.get("Contents", []))
            if not reply.get("IsTruncated"):
                return
            args["ContinuationToken"] = reply["NextContinuationToken"]

    return crawl([directory(root + prefix, 0)], threads)
