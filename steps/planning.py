"""Validate a run's locations and plan its shards: everything a flow's ``start`` step does.

Bad configuration fails here, before any fan-out, with one line that names the value, what was
expected and the fix.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from steps.errors import ConfigError
from steps.progress import log
from steps.shards import ShardPlan, ShardRef, list_input_objects, plan_shards, stored_layout, write_plan
from steps.storage import S3Storage, Storage, is_s3, open_storage


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


def check_input(uri: str) -> Storage:
    if not uri:
        raise ConfigError("--input", uri, "a directory or s3://bucket/prefix of images", "pass --input")
    if not is_s3(uri) and not os.path.isdir(uri):
        raise ConfigError(
            "--input",
            uri,
            "an existing directory of images",
            "check the path, or create sample data with `python -m steps.sample_data DIR`",
        )
    storage = open_storage(uri)
    if isinstance(storage, S3Storage):
        storage.check_bucket()
    return storage


def check_output(uri: str) -> Storage:
    """Open the output location and prove it is writable with a probe write."""
    if not uri:
        raise ConfigError("--output", uri, "a directory or s3://bucket/prefix", "pass --output")
    storage = open_storage(uri)
    if isinstance(storage, S3Storage):
        storage.check_bucket()
    probe = f"_probe/{uuid.uuid4().hex}"
    try:
        storage.write(probe, b"")
        storage.delete(probe)
    except OSError as err:
        raise ConfigError(
            "--output", uri, "a writable location", f"fix permissions or choose another path ({err})"
        ) from err
    return storage


def check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(name, value, "a positive integer", f"pass {name} with a value of 1 or more")


def _within(inner: str, outer: str) -> bool:
    def normal(uri: str) -> str:
        return (uri if is_s3(uri) else os.path.abspath(uri)).rstrip("/") + "/"

    return normal(inner).startswith(normal(outer))


def plan_for_output(target: Storage, keys: list[str], shard_size: int, max_shards: int, prefix_width: int) -> ShardPlan:
    """Plan shards; an output written before keeps its layout (prefix width and ranges).

    Shards of another layout would overlap the manifests already there and count keys twice.
    """
    earlier = stored_layout(target)
    if earlier is None:
        return plan_shards(keys, shard_size, max_shards, prefix_width)
    width, starts = earlier
    if prefix_width not in (0, width):
        raise ConfigError(
            "--prefix-width",
            prefix_width,
            f"{width} (or 0), the width of the earlier run into {target.uri}",
            "pass --prefix-width 0 to continue that output, or write to a new --output",
        )
    log(f"keeping prefix width {width} of the earlier run into {target.uri}")
    return plan_shards(keys, shard_size, max_shards, width, starts)


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
