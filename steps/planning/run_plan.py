"""The plan of a sharded run: validate locations, list the input, choose shards, store their key lists."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from steps.cost.throughput import ImageCost
from steps.errors import ConfigError
from steps.io.input_format import WEBDATASET
from steps.io.listing import ObjectInfo
from steps.io.storage import Storage, is_s3, open_storage
from steps.io.validation import check_input, check_output, check_positive
from steps.output.supersede import layout_misfit
from steps.planning.inputs import input_pages
from steps.planning.inventory import manifest_pages
from steps.planning.prefixes import PrefixCounts, ShardLayout, ShardRange, cell_of, plan_layout
from steps.planning.sizing import PlanSettings, Sizing
from steps.planning.spill import KeySpill
from steps.planning.store import stored_layout, write_layout, write_shard_keys
from steps.planning.tars import plan_tars, resolve_format
from steps.progress import log


@dataclass(frozen=True)
class RunPlan:
    """The plan of a run: its shards (each one's keys stored at ``plan_keys_key(name)`` under the
    output) and why they are what they are."""

    input_uri: str
    output_uri: str
    width: int
    reason: str
    input_bytes: int
    shards: tuple[ShardRange, ...]
    largest_task_minutes: float | None = None  # estimated, from the flow's per-image cost
    input_format: str = "images"  # or "webdataset": the keys are tars, their image counts estimates

    @property
    def images(self) -> int:
        return sum(s.images for s in self.shards)

    def describe(self) -> dict:
        """What people see as the ``shard_plan`` artifact."""
        sizes = [s.images for s in self.shards]
        return {
            "input": self.input_uri,
            "output": self.output_uri,
            "images": self.images,
            "input_bytes": self.input_bytes,
            "shards": len(self.shards),
            "prefix_width": self.width,
            "smallest_shard": min(sizes, default=0),
            "largest_shard": max(sizes, default=0),
            "largest_task_minutes": self.largest_task_minutes,
            "reason": self.reason,
            "input_format": self.input_format,
        }


def _within(inner: str, outer: str) -> bool:
    def normal(uri: str) -> str:
        return (uri if is_s3(uri) else os.path.abspath(uri)).rstrip("/") + "/"

    return normal(inner).startswith(normal(outer))


def layout_for_output(target: Storage, counts: PrefixCounts, settings: PlanSettings) -> ShardLayout:
    """Choose shards; an output written before keeps its layout (prefix width and ranges) while it
    still fits the settings, so a rerun's shards line up with the manifests already there.

    Otherwise the output is planned anew and ``start`` retires the earlier shards
    (``steps.output.supersede``): shards of two layouts would count keys twice.
    """
    sizing, max_shards, shard_size = settings.sizing, settings.max_shards, settings.sizing.target_images()
    earlier = stored_layout(target)
    if earlier is not None:
        width, starts = earlier
        misfit = layout_misfit(
            width,
            starts,
            counts,
            shard_size=shard_size,
            max_shards=max_shards,
            prefix_width=settings.prefix_width,
        )
        if not misfit:
            log(f"keeping prefix width {width} of the earlier run into {target.uri}")
            return plan_layout(counts, shard_size, max_shards, width, starts)
        log(f"planning {target.uri} anew, superseding its earlier shards: {misfit}")
    layout = plan_layout(counts, shard_size, max_shards, settings.prefix_width)
    sizing.check_fanout(layout, counts.total, max_shards)
    return layout


def stream_plan(pages: Iterable[list[ObjectInfo]], source_uri: str, target: Storage, settings: PlanSettings) -> RunPlan:
    """Plan the keys of ``pages`` (listed from ``source_uri``) without holding them: each key is
    counted and parked in a local spill file as it arrives, and each shard's key list is written
    to ``target`` as soon as it is complete, so memory is bounded by ``settings.buffer_bytes`` plus
    a few of the largest shards. ``settings.store`` False only counts: nothing is written anywhere.
    No key: a plan without shards."""
    store = settings.store
    with tempfile.TemporaryDirectory(prefix="spot-batch-plan-") as spill_directory:
        spill = KeySpill(spill_directory, settings.buffer_bytes)
        counts, input_bytes = spill.counts, 0
        for page in pages:
            for obj in page:
                if store:
                    spill.add(obj.key, obj.size)
                else:
                    counts.add(cell_of(obj.key))
                    input_bytes += obj.size
        if not counts.total:
            return RunPlan(source_uri, target.uri, 0, "no input", 0, ())
        layout = layout_for_output(target, counts, settings)
        shards = layout.ranges
        if store:
            write_layout(target, layout)
            shards = tuple(write_shard_keys(target, spill.shard_keys(layout.ranges), settings.threads))
            input_bytes = spill.input_bytes
    return RunPlan(
        source_uri,
        target.uri,
        layout.width,
        settings.sizing.explain(layout),
        input_bytes,
        shards,
        settings.sizing.largest_minutes(layout),
    )


def prepare_run(
    input_uri: str,
    output_uri: str,
    *,
    shard_size: int,
    max_shards: int,
    prefix_width: int,
    threads: int,
    task_minutes: float = 10.0,
    cost: ImageCost | None = None,
    manifest: str = "",
    store: bool = True,
    input_format: str = "auto",
) -> RunPlan:
    """Validate locations, list the input in parallel, plan shards and store each shard's key
    list (``stream_plan``). ``shard_size`` 0 sizes shards by ``task_minutes`` of ``cost``
    (``steps.planning.sizing``). A ``manifest`` (an S3 Inventory manifest.json or a key list, see
    ``steps.planning.inventory``) names the input keys instead of the listing. ``store=False``
    (``spot-batch plan``) writes nothing, not even the write probe under the output.
    ``input_format`` (``steps.planning.tars``): images, webdataset (shards of whole tars) or auto."""
    check_positive("--threads", threads)
    if _within(output_uri, input_uri):
        raise ConfigError(
            "--output",
            output_uri,
            "a location outside --input",
            "outputs under the input would be read back as inputs; choose a sibling path",
        )
    source = check_input(input_uri)
    target = check_output(output_uri) if store else open_storage(output_uri)
    settings = PlanSettings(Sizing(shard_size, task_minutes, cost), max_shards, prefix_width, threads, store)
    pages = manifest_pages(manifest, source) if manifest else input_pages(source)
    resolved, pages = resolve_format(pages, input_format, manifest or input_uri)
    planner = partial(plan_tars, source=source) if resolved == WEBDATASET else stream_plan
    plan = planner(pages, source.uri, target, settings)
    if not plan.shards:
        what, where = ("--manifest", manifest) if manifest else ("--input", input_uri)
        raise ConfigError(
            what,
            where,
            "at least one .tar file" if resolved == WEBDATASET else "at least one object",
            "point --input at the folder/prefix that holds the images or tars",
        )
    return plan
