"""Streaming planning: the plan written by ``prepare_run`` equals the in-memory plan, key lists
cannot split a key, reruns keep their layout, and the planner never holds the whole key list."""

import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from steps.errors import ConfigError
from steps.io.listing import ObjectInfo
from steps.io.local_storage import LocalStorage
from steps.output.layout import PLAN_LAYOUT_KEY
from steps.planning.run_plan import RunPlan, prepare_run, stream_plan
from steps.planning.sizing import PlanSettings, Sizing
from steps.planning.store import read_shard_keys
from tests.support.flows import REPO
from tests.support.plans import plan_shards


def sha_names(count: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() + ".jpg" for i in range(start, start + count)]


def make_input(root: Path, names: list[str]) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def written_plan(output: Path, refs) -> dict[str, list[str]]:
    storage = LocalStorage(output)
    return {ref.name: read_shard_keys(storage, ref.name) for ref in refs}


@pytest.mark.parametrize(("shard_size", "max_shards"), [(10_000, 100), (40, 100), (10, 20)])
def test_streamed_plan_equals_the_in_memory_plan(tmp_path: Path, shard_size: int, max_shards: int) -> None:
    names = [*sha_names(400), "holiday/IMG_0001.JPG", "IMG 2.png", "odd\nname.jpg", "ünï/cödé.jpg"]
    source = make_input(tmp_path / "in", names)
    run = prepare_run(
        str(source), str(tmp_path / "out"), shard_size=shard_size, max_shards=max_shards, prefix_width=0, threads=4
    )
    expected = plan_shards(names, shard_size, max_shards)
    assert written_plan(tmp_path / "out", run.shards) == {s.name: list(s.keys) for s in expected.shards}
    assert (run.width, run.reason, run.images, run.input_bytes) == (
        expected.width,
        expected.reason,
        len(names),
        len(names),
    )


def test_a_key_with_a_newline_stays_one_key(tmp_path: Path) -> None:
    source = make_input(tmp_path / "in", ["a\nb.jpg", "c.jpg"])
    run = prepare_run(str(source), str(tmp_path / "out"), shard_size=10, max_shards=10, prefix_width=0, threads=2)
    assert written_plan(tmp_path / "out", run.shards) == {"all": ["a\nb.jpg", "c.jpg"]}


def test_rerun_into_the_output_keeps_width_and_ranges(tmp_path: Path) -> None:
    source = make_input(tmp_path / "in", sha_names(300))
    first = prepare_run(str(source), str(tmp_path / "out"), shard_size=10, max_shards=8, prefix_width=0, threads=2)
    layout = json.loads((tmp_path / "out" / PLAN_LAYOUT_KEY).read_text())
    make_input(source, sha_names(100, start=300))
    grown = prepare_run(str(source), str(tmp_path / "out"), shard_size=10_000, max_shards=8, prefix_width=0, threads=2)
    assert json.loads((tmp_path / "out" / PLAN_LAYOUT_KEY).read_text()) == layout
    assert {r.name for r in grown.shards} == {r.name for r in first.shards}
    assert grown.images == 400 and "earlier run" in grown.reason
    with pytest.raises(ConfigError, match="--prefix-width 3"):
        prepare_run(str(source), str(tmp_path / "out"), shard_size=10, max_shards=8, prefix_width=3, threads=2)


def test_planning_only_writes_nothing_under_the_output(tmp_path: Path) -> None:
    source = make_input(tmp_path / "in", sha_names(50))
    run = prepare_run(
        str(source), str(tmp_path / "out"), shard_size=10, max_shards=100, prefix_width=0, threads=2, store=False
    )
    assert run.images == 50 and len(run.shards) == 5
    assert not (tmp_path / "out").exists()


def generated_pages(count: int, page: int = 1000) -> Iterator[list[ObjectInfo]]:
    for start in range(0, count, page):
        yield [ObjectInfo(name, 1) for name in sha_names(min(page, count - start), start)]


def planner_memory(out: str) -> tuple[int, int, int, int]:
    """(shards, keys planned, traced peak while planning, traced size of all keys held) for 100,000
    keys: enough that the planner's fixed costs (prefix counters, buffers) are small beside them."""
    count = 100_000

    def plan(pages: Iterator[list[ObjectInfo]], into: str) -> RunPlan:
        settings = PlanSettings(Sizing(1000), max_shards=256, prefix_width=0, threads=2, buffer_bytes=256 << 10)
        return stream_plan(pages, "generated", LocalStorage(into), settings)

    plan(generated_pages(2000), f"{out}/warm-up")  # first-use imports and caches are not the planner's keys
    tracemalloc.start()
    held = [o.key for page in generated_pages(count) for o in page]
    all_keys = tracemalloc.get_traced_memory()[0]
    del held
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    planned = plan(generated_pages(count), out)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return len(planned.shards), planned.images, peak, all_keys


def test_planner_memory_is_bounded_by_shards_not_by_the_dataset(tmp_path: Path) -> None:
    # In a fresh process: tracemalloc counts every thread, and other tests leave servers running.
    measure = f"from tests.unit.planning.test_streaming import planner_memory as m; print(*m({str(tmp_path)!r}))"
    done = subprocess.run([sys.executable, "-c", measure], cwd=REPO, capture_output=True, text=True, check=True)
    shards, planned, peak, all_keys = map(int, done.stdout.split())
    assert (shards, planned) == (100, 100_000)
    # Holding every key would cost ``all_keys``; the planner holds a buffer and a few shards.
    assert peak < all_keys / 2, (peak, all_keys)


def test_keys_json_or_utf8_could_split_stay_whole_and_readable(tmp_path: Path) -> None:
    source = make_input(tmp_path / "in", ["para\u2028graph.jpg", "cr\rlf.jpg"])
    os.close(os.open(os.fsencode(source) + b"/not-utf8-\xff.jpg", os.O_CREAT | os.O_WRONLY))
    run = prepare_run(str(source), str(tmp_path / "out"), shard_size=10, max_shards=10, prefix_width=0, threads=2)
    keys = written_plan(tmp_path / "out", run.shards)["all"]
    assert keys == sorted(["para\u2028graph.jpg", "cr\rlf.jpg", os.fsdecode(b"not-utf8-\xff.jpg")])
    assert all(LocalStorage(source).read(key) in (b"x", b"") for key in keys)
