"""Planning an input of WebDataset tars: which inputs are tars, and shards of whole tars.

``--input-format``: ``images`` plans every object (today's behaviour); ``webdataset`` plans the
``*.tar`` keys and ignores the rest (img2dataset's ``.parquet``/``_stats.json`` beside its tars,
PreprocessFlow's manifests and indexes); ``auto`` (the default) is ``webdataset`` when the input
holds ``.tar`` files and no images, ``images`` otherwise, and refuses an input holding both.
The decision streams with the listing: the first page holding a tar or an image decides, pages
of neither are held until one does (at most ``UNDECIDED_KEYS`` keys), and a key of the other
kind arriving later fails ``start`` in one line.

A shard is a set of whole tars sized by image count. Counting a tar's images means reading it
(its headers are spread through it: one ranged GET per member), so ``start`` reads one tar, the
first by key, counts its images, and estimates every tar's images from its size at that many
bytes an image (a key list that gives no sizes: the first tar it names is read, and every tar
without a size weighs as much): each tar weighs its bytes in the prefix layout (``steps.planning.prefixes``),
and the target images per shard becomes a target in bytes. The plan's image counts are
estimates; the shards' manifests count the real rows. Memory stays the planner's: a key spill
and 65,536 counters, plus the one tar read.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import chain
from typing import TYPE_CHECKING

from steps.errors import ConfigError
from steps.io.input_format import IMAGES, INPUT_FORMATS, WEBDATASET
from steps.io.listing import ObjectInfo
from steps.io.storage import Storage
from steps.io.tar_reader import TAR_SUFFIX, read_tar
from steps.planning.prefixes import ShardLayout
from steps.planning.sizing import PlanSettings, Sizing
from steps.planning.spill import KeySpill
from steps.planning.store import write_layout, write_shard_keys
from steps.progress import log

if TYPE_CHECKING:
    from steps.planning.run_plan import RunPlan

UNDECIDED_KEYS = 100_000  # keys held while ``auto`` has seen neither a tar nor an image
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".avif", ".jp2")
FALLBACK_BYTES_PER_IMAGE = 100_000  # when the measured tar holds no image


def is_tar(key: str) -> bool:
    return key.endswith(TAR_SUFFIX)


def is_image(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES)


def check_input_format(value: str) -> None:
    if value not in INPUT_FORMATS:
        raise ConfigError(
            "--input-format", value, " or ".join(INPUT_FORMATS), "pass --input-format webdataset for *.tar shards"
        )


def _both(where: str, tar: str, image: str) -> ConfigError:
    return ConfigError(
        "--input-format auto",
        where,
        f"either images or WebDataset .tar shards, not both (it holds {tar} and {image})",
        "pass --input-format webdataset to read only the tars, or --input-format images to read every object",
    )


def _tar_keys(page: list[ObjectInfo]) -> list[ObjectInfo]:
    tars = [o for o in page if is_tar(o.key)]
    for obj in tars:
        if TAR_SUFFIX + "/" in obj.key:
            raise ConfigError(
                "tar key", obj.key, "no folder named *.tar above a tar", "rename the folder or list the tars below it"
            )
    return tars


def resolve_format(
    pages: Iterable[list[ObjectInfo]], requested: str, where: str
) -> tuple[str, Iterator[list[ObjectInfo]]]:
    """The input format (``images`` or ``webdataset``) and the pages to plan, streamed: for
    ``webdataset`` only the tars. ``auto`` reads pages until one decides (see the module doc)."""
    check_input_format(requested)
    pages = iter(pages)
    if requested == IMAGES:
        return IMAGES, pages
    if requested == WEBDATASET:
        return WEBDATASET, (_tar_keys(page) for page in pages)
    held: list[list[ObjectInfo]] = []
    for page in pages:
        held.append(page)
        tar = next((o.key for o in page if is_tar(o.key)), None)
        image = next((o.key for o in page if is_image(o.key)), None)
        if tar and image:
            raise _both(where, tar, image)
        if tar or image:
            return (WEBDATASET, _only_tars(held, pages, where)) if tar else (IMAGES, _no_tars(held, pages, where))
        if sum(len(p) for p in held) > UNDECIDED_KEYS:
            raise ConfigError(
                "--input-format auto",
                where,
                f"a tar or an image among its first {UNDECIDED_KEYS} keys",
                "pass --input-format images or --input-format webdataset",
            )
    return IMAGES, iter(held)


def _only_tars(held: list, pages: Iterator[list[ObjectInfo]], where: str) -> Iterator[list[ObjectInfo]]:
    tar = ""
    for page in chain(held, pages):
        tars = _tar_keys(page)
        tar = tar or (tars[0].key if tars else "")
        image = next((o.key for o in page if is_image(o.key)), None)
        if image:
            raise _both(where, tar, image)
        yield tars


def _no_tars(held: list, pages: Iterator[list[ObjectInfo]], where: str) -> Iterator[list[ObjectInfo]]:
    image = ""
    for page in chain(held, pages):
        image = image or next((o.key for o in page if is_image(o.key)), "")
        tar = next((o.key for o in page if is_tar(o.key)), None)
        if tar:
            raise _both(where, tar, image)
        yield page


@dataclass(frozen=True)
class Calibration:
    """What one tar read whole says: bytes an image, the tar's size, and how it was measured."""

    per_image: float
    tar_bytes: int
    measured: str


def calibrate(source: Storage, tar_key: str) -> Calibration:
    """Read ``tar_key`` whole, once, and count its images."""
    samples = read_tar(source, tar_key)
    images, size = len(samples.images), len(samples.data)
    if not images:
        reason = next(iter(samples.rejects.values()), "no images")
        log(f"planning tars: {tar_key} gave no image ({reason}); assuming {FALLBACK_BYTES_PER_IMAGE} bytes an image")
        measured = f"assumed {FALLBACK_BYTES_PER_IMAGE / 1e3:.0f} KB an image"
        return Calibration(FALLBACK_BYTES_PER_IMAGE, size or FALLBACK_BYTES_PER_IMAGE, measured)
    per_image = size / images
    return Calibration(per_image, size, f"{per_image / 1e3:.1f} KB an image, measured on {tar_key} ({images} images)")


def _in_images(layout: ShardLayout, per_image: float, target_images: int, measured: str) -> ShardLayout:
    """The byte-weighted layout with its shards' image counts estimated."""
    ranges = tuple(replace(r, images=max(1, round(r.images / per_image))) for r in layout.ranges)
    reason = f"{layout.reason.replace(' images', ' tar bytes')}; whole tars, {measured}"
    return ShardLayout(layout.width, ranges, target_images, reason, layout.starts)


def plan_tars(
    pages: Iterable[list[ObjectInfo]], source_uri: str, target: Storage, settings: PlanSettings, *, source: Storage
) -> RunPlan:
    """``stream_plan`` for tars: the same prefix layout, each tar weighing its bytes, the target
    in bytes from the images of the first tar; the shards' ``images`` are estimates."""
    from steps.planning.run_plan import RunPlan, layout_for_output  # run_plan hooks this module in

    with tempfile.TemporaryDirectory(prefix="spot-batch-plan-") as spill_directory:
        spill = KeySpill(spill_directory, settings.buffer_bytes)
        first, calibration = None, None
        for page in pages:
            for obj in page:
                size = obj.size
                if not size:  # a key list without sizes: such a tar weighs as much as the one measured
                    calibration = calibration or calibrate(source, obj.key)
                    size = calibration.tar_bytes
                spill.add(obj.key, size, weight=max(size, 1))
                first = obj.key if first is None or obj.key < first else first
        if first is None:
            return RunPlan(source_uri, target.uri, 0, "no input", 0, (), input_format=WEBDATASET)
        calibration = calibration or calibrate(source, first)
        per_image, measured = calibration.per_image, calibration.measured
        sizing = settings.sizing
        target_images = sizing.target_images()
        by_bytes = Sizing(shard_size=max(1, round(target_images * per_image)))
        layout = layout_for_output(target, spill.counts, replace(settings, sizing=by_bytes))
        in_images = _in_images(layout, per_image, target_images, measured)
        sizing.check_fanout(in_images, sum(r.images for r in in_images.ranges), settings.max_shards)
        shards = in_images.ranges
        if settings.store:
            images = {r.name: r.images for r in in_images.ranges}
            write_layout(target, layout)
            written = write_shard_keys(target, spill.shard_keys(layout.ranges), settings.threads)
            shards = tuple(replace(shard, images=images[shard.name]) for shard in written)
    return RunPlan(
        source_uri,
        target.uri,
        in_images.width,
        sizing.explain(in_images),
        spill.input_bytes,
        shards,
        sizing.largest_minutes(in_images),
        WEBDATASET,
    )
