"""Tar-shard inputs planned and preprocessed: the format decision, shards of whole tars sized by
estimated images, exactly-once rows per tar member, and ``verify`` over them."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.errors import ConfigError
from steps.io.input_format import TAR_SHARDS
from steps.io.listing import ObjectInfo
from steps.io.local_storage import LocalStorage
from steps.io.storage import open_storage
from steps.io.tar_reader import split_samples
from steps.output.supersede import retire_superseded
from steps.planning.inputs import list_inputs
from steps.planning.run_plan import prepare_run
from steps.planning.store import read_shard_keys
from steps.planning.tars import UNDECIDED_KEYS, resolve_format
from steps.preprocess.files import PREPROCESS_FILES
from steps.preprocess.shard import preprocess_shard
from steps.preprocess.webdataset import WebDatasetPacker
from steps.verify import verify
from tests.support.flows import S3Server, upload_dir
from tests.support.tars import images_to_tars


def pages(*keys: list[str]) -> list[list[ObjectInfo]]:
    return [[ObjectInfo(k, 10) for k in page] for page in keys]


def planned(fmt: str, listing: list[list[ObjectInfo]]) -> tuple[str, list[str]]:
    resolved, kept = resolve_format(listing, fmt, "s3://b/in")
    return resolved, [o.key for page in kept for o in page]


def test_auto_plans_tars_when_there_are_no_images_and_refuses_both() -> None:
    img2dataset = pages(["00000.parquet", "00000_stats.json"], ["00000.tar", "00001.tar", "00001.parquet"])
    assert planned("auto", img2dataset) == ("webdataset", ["00000.tar", "00001.tar"])
    assert planned("auto", pages(["a.jpg", "notes.txt"], ["b.PNG"])) == ("images", ["a.jpg", "notes.txt", "b.PNG"])
    assert planned("auto", pages(["notes.txt"])) == ("images", ["notes.txt"])
    assert planned("webdataset", pages(["a.jpg", "x/0.tar"])) == ("webdataset", ["x/0.tar"])
    assert planned("images", pages(["a.jpg", "x/0.tar"])) == ("images", ["a.jpg", "x/0.tar"])
    for listing in (pages(["a.jpg", "0.tar"]), pages(["0.tar"], ["n.txt"], ["a.jpg"]), pages(["a.jpg"], ["0.tar"])):
        with pytest.raises(ConfigError, match=r"either images or WebDataset \.tar shards, not both") as info:
            planned("auto", listing)
        assert "--input-format webdataset" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=f"a tar or an image among its first {UNDECIDED_KEYS} keys"):
        planned("auto", pages([f"{i}.json" for i in range(UNDECIDED_KEYS + 1)], ["0.tar"]))
    with pytest.raises(ConfigError, match="no folder named"):
        planned("webdataset", pages(["a.tar/0.tar"]))
    with pytest.raises(ConfigError, match="--input-format 'tar'"):
        planned("tar", pages(["0.tar"]))


@pytest.fixture
def tars(sample_dir: Path, tmp_path: Path) -> Path:
    """The sample photos (and bad files) in six tars of 9 samples, plus img2dataset-like sidecars."""
    source = LocalStorage(sample_dir)
    directory = tmp_path / "tars"
    images_to_tars({k: source.read(k) for k in list_inputs(source)}, directory, 9, {})
    (directory / "00000_stats.json").write_text("{}")
    return directory


def test_shards_are_whole_tars_sized_by_estimated_images(tars: Path, tmp_path: Path) -> None:
    count = len(list(tars.glob("*.tar")))
    plan = prepare_run(str(tars), str(tmp_path / "out"), shard_size=20, max_shards=100, prefix_width=0, threads=2)
    assert plan.input_format == "webdataset" and plan.describe()["input_format"] == "webdataset"
    keys = [read_shard_keys(LocalStorage(tmp_path / "out"), ref.name) for ref in plan.shards]
    assert sorted(k for shard in keys for k in shard) == sorted(p.name for p in tars.glob("*.tar"))
    assert len(plan.shards) > 1 and all(0 < ref.images <= 3 * 20 for ref in plan.shards)
    assert abs(plan.images - 9 * count) <= 9 * count // 3  # estimated from the first tar's bytes an image
    assert "whole tars" in plan.reason and "measured on 00000.tar" in plan.reason

    listed = tmp_path / "tars.txt"  # a key list without sizes: each tar weighs as much as the first named
    listed.write_text("\n".join(sorted(p.name for p in tars.glob("*.tar"))))
    from_list = prepare_run(
        str(tars), str(tmp_path / "o2"), shard_size=20, max_shards=100, prefix_width=0, threads=2, manifest=str(listed)
    )
    assert from_list.input_format == "webdataset" and len(from_list.shards) > 1
    assert abs(from_list.images - 9 * count) <= 9 * count // 3

    preview = prepare_run(
        str(tars), str(tmp_path / "none"), shard_size=20, max_shards=100, prefix_width=0, threads=2, store=False
    )
    assert [r.name for r in preview.shards] == [r.name for r in plan.shards] and not (tmp_path / "none").exists()


def test_preprocess_from_tars_is_exactly_once_per_member_and_verifies(tars: Path, tmp_path: Path) -> None:
    (tars / "00005.tar").write_bytes((tars / "00005.tar").read_bytes()[:3000])  # truncated in its first image
    out = tmp_path / "out"
    plan = prepare_run(str(tars), str(out), shard_size=1000, max_shards=1, prefix_width=0, threads=2)
    target = LocalStorage(out)
    keys = read_shard_keys(target, plan.shards[0].name)

    def run() -> object:
        pack = WebDatasetPacker(target, "all", keys, 1, {}, threads=2, unit_of=TAR_SHARDS.unit_of)
        return preprocess_shard(
            name="all",
            keys=keys,
            source=LocalStorage(tars),
            target=target,
            size=32,
            threads=2,
            pack=pack,
            inputs=TAR_SHARDS,
        )

    outcome = run()
    rows = outcome.manifest.to_pylist()
    assert outcome.chunks == len(keys) == 6  # a chunk per tar
    assert {r["key"].split("/")[0] for r in rows} == set(keys) and len({r["key"] for r in rows}) == len(rows)
    truncated = [r for r in rows if r["key"].startswith("00005.tar/")]
    assert len(truncated) == 1 and truncated[0]["reason"].startswith("truncated tar:")
    good = [r for r in rows if r["status"] == "ok"]
    assert all((out / "resized" / (r["key"].rsplit(".", 1)[0] + ".jpg")).is_file() for r in good)
    assert verify(str(out), str(tars)).ok
    # --format webdataset from tars: a tar of samples per input tar, every good row once.
    packed = [split_samples(p.name, p.read_bytes()) for p in sorted((out / "webdataset" / "all").glob("*.tar"))]
    assert len(packed) == 6 and sum(len(t.images) for t in packed) == len(good)
    assert len({k.rsplit("/", 1)[1] for t in packed for k in t.images}) == len(good)  # unique sample ids

    (out / "_manifests" / "all.parquet").unlink()
    (out / "_ledger" / "all" / "chunk-00002.parquet").unlink()
    assert run().skipped_chunks == 5 and verify(str(out), str(tars)).ok
    (out / "_manifests" / "all.parquet").unlink()
    broken = verify(str(out), str(tars))
    assert not broken.ok and any(p.startswith("shard all: no manifest") for p in broken.problems)


def test_a_new_layout_retires_tar_shards_and_keeps_the_images_of_tars_still_planned(tars: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    target = LocalStorage(out)

    def process(plan: object) -> None:
        for ref in plan.shards:
            keys = read_shard_keys(target, ref.name)
            preprocess_shard(
                name=ref.name,
                keys=keys,
                source=LocalStorage(tars),
                target=target,
                size=32,
                threads=2,
                inputs=TAR_SHARDS,
            )

    small = prepare_run(str(tars), str(out), shard_size=20, max_shards=100, prefix_width=0, threads=2)
    process(small)
    resized = sorted(out.glob("resized/**/*.jpg"))
    assert len(small.shards) > 1 and resized
    one = prepare_run(str(tars), str(out), shard_size=1000, max_shards=1, prefix_width=0, threads=2)
    retired = retire_superseded(target, [s.name for s in one.shards], PREPROCESS_FILES, 2, TAR_SHARDS.unit_of)
    assert sorted(retired.shards) == sorted(ref.name for ref in small.shards)
    assert sorted(out.glob("resized/**/*.jpg")) == resized  # every tar is still planned: its images stay
    process(one)
    assert verify(str(out), str(tars)).ok


def test_tars_on_s3_are_planned_and_read_with_one_get_each(tars: Path, s3_server: S3Server) -> None:
    bucket = s3_server.make_bucket("tars")
    upload_dir(s3_server, tars, f"{bucket}/in")
    plan = prepare_run(f"{bucket}/in", f"{bucket}/out", shard_size=20, max_shards=100, prefix_width=0, threads=2)
    assert plan.input_format == "webdataset" and len(plan.shards) > 1
    source, target = open_storage(f"{bucket}/in"), open_storage(f"{bucket}/out")
    shard_keys = [read_shard_keys(target, ref.name) for ref in plan.shards]
    read = [keys for shard in shard_keys for _, keys in TAR_SHARDS.chunks(source, [[k] for k in shard])]
    local = [keys for shard in shard_keys for _, keys in TAR_SHARDS.chunks(LocalStorage(tars), [[k] for k in shard])]
    assert read == local and sum(map(len, read)) >= 50
