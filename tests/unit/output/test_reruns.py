"""Exactly once across reruns: mutate the input set and the shard settings between runs into one
output, at every prefix width (0 included), and check verify's verdict after every run.

Runs the library path a flow runs (``prepare_run`` and ``retire_superseded`` as in ``start``, then
each shard's task function), so many random histories stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import random
import shutil
import tarfile
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from steps.errors import SpotInterruption
from steps.inference.files import INFER_FILES
from steps.inference.shard import infer_shard
from steps.inference.tasks import ClassifyTask
from steps.io.local_storage import LocalStorage
from steps.io.parquet import parquet_to_table
from steps.io.storage import Storage
from steps.models.loading import LoadedModel, load_model
from steps.output.layout import PLAN_KEYS_SUFFIX
from steps.output.supersede import ShardFiles, layout_misfit, retire_superseded
from steps.planning.prefixes import PrefixCounts, cell_of
from steps.planning.run_plan import RunPlan, prepare_run
from steps.planning.store import read_shard_keys
from steps.preprocess.files import PREPROCESS_FILES
from steps.preprocess.shard import preprocess_shard
from steps.preprocess.webdataset import WebDatasetPacker, read_label_map
from steps.verify import verify
from tests.support.models import save_bundle


def tiny_jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 9), (seed * 7 % 256, seed * 13 % 256, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def make_pool(count: int) -> dict[str, bytes]:
    """sha256-named JPEGs, one bad file, and two keys that share an output name."""
    pool = {}
    for i in range(count):
        data = tiny_jpeg(i)
        pool[f"{hashlib.sha256(data + bytes([i])).hexdigest()}.jpg"] = data
    pool["broken.jpg"] = b"not an image"
    pool["holiday/a.jpg"] = tiny_jpeg(1)
    pool["holiday/a.png"] = tiny_jpeg(2)
    return pool


POOL = make_pool(36)


@dataclass(frozen=True)
class Settings:
    shard_size: int
    max_shards: int
    prefix_width: int = 0


# Width 0 (one "all" shard), auto width 1 and 2, packed ranges, a forced width.
SETTINGS = [
    Settings(100, 16),
    Settings(10, 16),
    Settings(2, 256),
    Settings(3, 4),
    Settings(100, 256, prefix_width=2),
    Settings(5, 2),
]


# Shard names of several layouts (width 0, 1, 2, ranges): a run with LOSES_SOME loses those tasks.
LOSES_SOME = frozenset({"all", "0", "7", "00", "a0", "0-3", "0-7"})


def plan_run(source: Path, output: Path, settings: Settings, files: ShardFiles) -> RunPlan:
    plan = prepare_run(
        str(source),
        str(output),
        shard_size=settings.shard_size,
        max_shards=settings.max_shards,
        prefix_width=settings.prefix_width,
        threads=2,
    )
    retire_superseded(LocalStorage(output), [s.name for s in plan.shards], files, threads=2)
    return plan


def stop_for(name: str, lost: Collection[str]) -> threading.Event | None:
    """A stop event already set for a shard in ``lost``: its task ends before any chunk, as if lost."""
    if name not in lost:
        return None
    event = threading.Event()
    event.set()
    return event


def run_shards(
    source: Path,
    output: Path,
    settings: Settings,
    files: ShardFiles,
    *,
    task: Callable[..., object],
    lost: Collection[str],
    chunk_size: int = 3,
) -> None:
    """One run: plan as ``start`` does, then each shard's ``task(**common)``; the tasks of shards
    named in ``lost`` stop before their first chunk."""
    target = LocalStorage(output)
    for ref in plan_run(source, output, settings, files).shards:
        common = {"name": ref.name, "keys": read_shard_keys(target, ref.name), "source": LocalStorage(source)}
        with contextlib.suppress(SpotInterruption):
            task(**common, target=target, threads=2, chunk_size=chunk_size, stop=stop_for(ref.name, lost))


def preprocess_run(source: Path, output: Path, settings: Settings, lost: Collection[str] = ()) -> None:
    run_shards(source, output, settings, PREPROCESS_FILES, task=functools.partial(preprocess_shard, size=8), lost=lost)


def webdataset_shard(*, name: str, keys: Sequence[str], source: Storage, target: Storage, **common: object) -> object:
    """A PreprocessFlow shard task with ``--format webdataset`` (as flows/preprocess.py builds it)."""
    pack = WebDatasetPacker(target, name, keys, common["chunk_size"], read_label_map(source), threads=2)
    return preprocess_shard(name=name, keys=keys, source=source, target=target, size=8, pack=pack, **common)


def webdataset_run(source: Path, output: Path, settings: Settings, chunk_size: int, lost: Collection[str] = ()) -> None:
    run_shards(source, output, settings, PREPROCESS_FILES, task=webdataset_shard, lost=lost, chunk_size=chunk_size)


def infer_run(source: Path, output: Path, settings: Settings, model: LoadedModel, lost: Collection[str] = ()) -> None:
    task = functools.partial(infer_shard, task=ClassifyTask(model, 2), batch_size=4, workers=1, prefetch_batches=2)
    run_shards(source, output, settings, INFER_FILES, task=task, lost=lost)


def set_inputs(source: Path, keys: Sequence[str]) -> None:
    shutil.rmtree(source, ignore_errors=True)
    for key in keys:
        path = source / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(POOL[key])


def history(seed: int, steps: int = 4) -> list[tuple[list[str], Settings]]:
    """A random sequence of input sets (grown, shrunk, replaced) and settings."""
    rng = random.Random(seed)
    names = sorted(POOL)
    current = rng.sample(names, rng.randint(4, len(names)))
    out = []
    for _ in range(steps):
        out.append((sorted(current), rng.choice(SETTINGS)))
        kept = rng.sample(current, rng.randint(1, len(current)))
        added = rng.sample(names, rng.randint(0, len(names) // 2))
        current = sorted(set(kept) | set(added))
    return out


def assert_verified(output: Path, source: Path) -> None:
    result = verify(str(output), str(source))
    assert result.ok, result.problems[:10]
    assert result.verdict(str(output)).startswith(f"OK: {result.inputs}/{result.inputs} ")


def seeds(count: int, default: int) -> list:
    """``count`` random histories; the first ``default`` run by default, the rest are slow variants."""
    return [seed if seed < default else pytest.param(seed, marks=pytest.mark.slow) for seed in range(count)]


@pytest.mark.parametrize("seed", seeds(8, default=1))
def test_preprocess_reruns_over_changing_inputs_and_settings_stay_exactly_once(tmp_path: Path, seed: int) -> None:
    source, output = tmp_path / "in", tmp_path / "out"
    rng = random.Random(seed)
    for keys, settings in history(seed):
        set_inputs(source, keys)
        # Sometimes a run with other settings loses some shard tasks first; the next run must repair it.
        if rng.random() < 0.5:
            preprocess_run(source, output, rng.choice(SETTINGS), lost=LOSES_SOME)
        preprocess_run(source, output, settings)
        assert_verified(output, source)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"size{s.shard_size}-max{s.max_shards}-w{s.prefix_width}")
def test_removed_inputs_lose_their_files_and_a_whole_shard_gone_is_retired(tmp_path: Path, settings: Settings) -> None:
    source, output = tmp_path / "in", tmp_path / "out"
    names = sorted(POOL)
    set_inputs(source, names)
    preprocess_run(source, output, SETTINGS[0])  # width 0: one shard
    preprocess_run(source, output, settings)
    assert_verified(output, source)
    # Remove every key of the first shard of the current plan (half of a one-shard plan), and a.jpg
    # (a.png now owns its output name).
    plans = sorted((output / "_plan").glob(f"*{PLAN_KEYS_SUFFIX}"))
    first = read_shard_keys(LocalStorage(output), plans[0].name.removesuffix(PLAN_KEYS_SUFFIX))
    gone = (set(first if len(plans) > 1 else first[::2]) | {"holiday/a.jpg"}) - {"holiday/a.png"}
    set_inputs(source, [k for k in names if k not in gone])
    preprocess_run(source, output, settings)
    assert_verified(output, source)
    assert (output / "resized/holiday/a.jpg").exists()  # now a.png's


def tar_sample_keys(output: Path) -> list[str]:
    """The input key of every sample in every tar under webdataset/ (what a training reader sees)."""
    keys = []
    for path in sorted((output / "webdataset").rglob("*.tar")):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".json"):
                    keys.append(json.loads(archive.extractfile(member).read())["key"])
    return keys


def good_keys(output: Path) -> list[str]:
    table = [parquet_to_table(p.read_bytes()).to_pylist() for p in (output / "_manifests").glob("*.parquet")]
    return sorted(row["key"] for rows in table for row in rows if row["status"] == "ok")


@pytest.mark.parametrize("seed", seeds(4, default=1))
def test_webdataset_tars_hold_each_good_input_once_across_formats_chunk_sizes_and_layouts(
    tmp_path: Path, seed: int
) -> None:
    """Earlier runs in --format files (complete shards, then skipped), lost tasks, another
    --chunk-size or layout: after each webdataset run, the tars hold each good input exactly once."""
    source, output = tmp_path / "in", tmp_path / "out"
    rng = random.Random(seed)
    for keys, settings in history(200 + seed):
        set_inputs(source, keys)
        before = rng.random()
        if before < 0.4:
            preprocess_run(source, output, settings)
        elif before < 0.8:
            webdataset_run(source, output, rng.choice(SETTINGS), chunk_size=rng.choice([2, 5]), lost=LOSES_SOME)
        webdataset_run(source, output, settings, chunk_size=rng.choice([2, 3, 5]))
        assert_verified(output, source)
        assert sorted(tar_sample_keys(output)) == good_keys(output)


def test_width_zero_output_that_outgrew_its_shard_is_planned_anew(tmp_path: Path) -> None:
    source, output = tmp_path / "in", tmp_path / "out"
    names = sorted(POOL)
    set_inputs(source, names[:20])
    preprocess_run(source, output, Settings(20, 4))
    assert [p.name for p in (output / "_manifests").iterdir()] == ["all.parquet"]
    set_inputs(source, names)
    preprocess_run(source, output, Settings(20, 4))
    manifests = sorted(p.name for p in (output / "_manifests").iterdir())
    assert "all.parquet" not in manifests and len(manifests) <= 4
    assert not list((output / "_ledger" / "all").rglob("*.parquet"))
    assert_verified(output, source)


def test_layout_is_kept_only_while_it_fits() -> None:
    keys = PrefixCounts()
    for i in range(0, 256, 8):
        keys.add(cell_of(f"{i:02x}" + "0" * 62 + ".jpg"))
    assert layout_misfit(0, (), keys, shard_size=100, max_shards=4, prefix_width=0) == ""
    assert "would hold 32 images, over 10 per shard" in layout_misfit(
        0, (), keys, shard_size=10, max_shards=4, prefix_width=0
    )
    assert "differs from its width 1" in layout_misfit(1, (), keys, shard_size=10, max_shards=16, prefix_width=2)
    assert "exceed --max-shards 4" in layout_misfit(1, (), keys, shard_size=10, max_shards=4, prefix_width=0)
    assert layout_misfit(1, ("0", "8"), keys, shard_size=10, max_shards=4, prefix_width=0) == ""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(save_bundle(tmp_path_factory.mktemp("model") / "model.pt")))


@pytest.mark.parametrize("seed", seeds(3, default=1))
def test_inference_reruns_over_changing_inputs_keep_one_prediction_row_per_input(
    tmp_path: Path, model: LoadedModel, seed: int
) -> None:
    source, output = tmp_path / "in", tmp_path / "out"
    rng = random.Random(seed)
    for keys, settings in history(100 + seed, steps=3):
        set_inputs(source, keys)
        if rng.random() < 0.5:
            infer_run(source, output, rng.choice(SETTINGS), model, lost=LOSES_SOME)
        infer_run(source, output, settings, model)
        assert_verified(output, source)
