"""Chunked exactly-once commits: a failed attempt's committed chunks are reused, none redone."""

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from steps.errors import SpotInterruption
from steps.io.storage import open_storage
from steps.output.layout import manifest_key
from steps.output.ledger import ChunkLedger, ShardOutcome, chunk_ranges, open_shard, run_chunked
from steps.progress import Progress

KEYS = [f"k{i:03d}" for i in range(23)]


class Boom(Exception):
    pass


def make_processor(calls: list[list[str]], fail_on_call: int | None = None):
    def process(chunk: Sequence[str], progress: Progress) -> pa.Table:
        if fail_on_call is not None and len(calls) == fail_on_call:
            raise Boom
        calls.append(list(chunk))
        return pa.table({"key": list(chunk)})

    return process


def run(
    tmp_path: Path,
    process: Callable[[Sequence[str], Progress], pa.Table],
    stop: threading.Event | None = None,
    keys: list[str] = KEYS,
) -> ShardOutcome:
    storage = open_storage(str(tmp_path))
    ledger = ChunkLedger(storage, "_ledger/s0")
    return run_chunked(open_shard(storage, ledger, "s0", keys, 5), process, stop=stop)


def test_chunk_ranges_cover_everything_once() -> None:
    assert [list(r) for r in chunk_ranges(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunk_ranges(0, 3) == []


def test_retry_resumes_after_last_committed_chunk_without_holes_or_duplicates(tmp_path: Path) -> None:
    first_calls: list[list[str]] = []
    with pytest.raises(Boom):
        run(tmp_path, make_processor(first_calls, fail_on_call=3))
    assert len(first_calls) == 3
    assert not (tmp_path / manifest_key("s0")).exists()

    retry_calls: list[list[str]] = []
    outcome = run(tmp_path, make_processor(retry_calls))
    assert retry_calls == [KEYS[15:20], KEYS[20:]]  # only the chunks that were never committed
    assert outcome.skipped_chunks == 3 and outcome.chunks == 5
    assert outcome.manifest["key"].to_pylist() == KEYS  # every key exactly once, in order

    again: list[list[str]] = []
    rerun = run(tmp_path, make_processor(again))
    assert rerun.skipped and rerun.manifest["key"].to_pylist() == KEYS
    assert again == []


def test_stop_request_keeps_committed_chunks_and_writes_no_manifest(tmp_path: Path) -> None:
    stop = threading.Event()
    calls: list[list[str]] = []

    def process(chunk: Sequence[str], progress: Progress) -> pa.Table:
        calls.append(list(chunk))
        stop.set()  # the notice arrives while the first chunk is in flight
        return pa.table({"key": list(chunk)})

    with pytest.raises(SpotInterruption, match="stopped before chunk 1"):
        run(tmp_path, process, stop)
    assert len(calls) == 1
    assert not (tmp_path / manifest_key("s0")).exists()
    assert (tmp_path / "_ledger/s0/chunk-00000.parquet").exists()


def test_a_chunk_with_missing_rows_is_never_committed(tmp_path: Path) -> None:
    def lossy(chunk: Sequence[str], progress: Progress) -> pa.Table:
        return pa.table({"key": list(chunk)[1:]})

    with pytest.raises(RuntimeError, match="produced 4 rows for 5 keys"):
        run(tmp_path, lossy)
    assert not (tmp_path / "_ledger").exists()


def test_changed_input_redoes_affected_chunks_and_drops_stale_ones(tmp_path: Path) -> None:
    assert run(tmp_path, make_processor([])).manifest["key"].to_pylist() == KEYS

    # One key removed from chunk 1: chunk 0 is still exact, later chunks shift; the old last chunk
    # (index 4) no longer exists in the new plan.
    fewer = KEYS[:7] + KEYS[8:21]
    calls: list[list[str]] = []
    outcome = run(tmp_path, make_processor(calls), keys=fewer)
    assert not outcome.skipped
    assert calls == [fewer[5:10], fewer[10:15], fewer[15:20]]  # chunk 0 reused
    assert outcome.manifest["key"].to_pylist() == fewer
    assert sorted(p.name for p in (tmp_path / "_ledger/s0").iterdir()) == [f"chunk-0000{i}.parquet" for i in range(4)]
    assert run(tmp_path, make_processor([]), keys=fewer).skipped
