"""The plan of a sharded run: validate locations, list the input, choose shards, store their key lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from steps.errors import ConfigError
from steps.io.storage import Storage, is_s3
from steps.io.validation import check_input, check_output, check_positive
from steps.progress import log
from steps.sharding.inputs import list_input_objects
from steps.sharding.plan import ShardPlan, plan_shards
from steps.sharding.plan_store import ShardRef, stored_layout, write_plan
from steps.sharding.supersede import layout_misfit


@dataclass(frozen=True)
class RunPlan:
    input_uri: str
    output_uri: str
    width: int
    reason: str
    images: int
    input_bytes: int
    shards: list[ShardRef]

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
            "reason": self.reason,
        }


def _within(inner: str, outer: str) -> bool:
    def normal(uri: str) -> str:
        return (uri if is_s3(uri) else os.path.abspath(uri)).rstrip("/") + "/"

    return normal(inner).startswith(normal(outer))


def plan_for_output(target: Storage, keys: list[str], shard_size: int, max_shards: int, prefix_width: int) -> ShardPlan:
    """Plan shards; an output written before keeps its layout (prefix width and ranges) while it
    still fits the settings, so a rerun's shards line up with the manifests already there.

    Otherwise the output is planned anew and ``start`` retires the earlier shards
    (``steps.sharding.supersede``): shards of two layouts would count keys twice.
    """
    earlier = stored_layout(target)
    if earlier is not None:
        width, starts = earlier
        misfit = layout_misfit(
            width, starts, keys, shard_size=shard_size, max_shards=max_shards, prefix_width=prefix_width
        )
        if not misfit:
            log(f"keeping prefix width {width} of the earlier run into {target.uri}")
            return plan_shards(keys, shard_size, max_shards, width, starts)
        log(f"planning {target.uri} anew, superseding its earlier shards: {misfit}")
    return plan_shards(keys, shard_size, max_shards, prefix_width)


def prepare_run(
    input_uri: str, output_uri: str, *, shard_size: int, max_shards: int, prefix_width: int, threads: int
) -> RunPlan:
    """Validate locations, list the input, plan shards and store each shard's key list."""
    check_positive("--threads", threads)
    if _within(output_uri, input_uri):
        raise ConfigError(
            "--output",
            output_uri,
            "a location outside --input",
            "outputs under the input would be read back as inputs; choose a sibling path",
        )
    source = check_input(input_uri)
    target = check_output(output_uri)
    objects = list_input_objects(source)
    keys = [o.key for o in objects]
    if not keys:
        raise ConfigError(
            "--input", input_uri, "at least one object", "point --input at the folder/prefix that holds the images"
        )
    plan = plan_for_output(target, keys, shard_size, max_shards, prefix_width)
    refs = write_plan(target, plan, threads)
    return RunPlan(source.uri, target.uri, plan.width, plan.reason, plan.images, sum(o.size for o in objects), refs)
