"""A plan's shard key lists stored under the output, so the fan-out itself stays small at any scale."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace

from steps.io.concurrency import map_bounded
from steps.io.storage import Storage
from steps.output.layout import PLAN_LAYOUT_KEY, plan_keys_key
from steps.planning.prefixes import ShardLayout, ShardRange
from steps.planning.spill import decode_keys, encode_key


def stored_layout(storage: Storage) -> tuple[int, tuple[str, ...]] | None:
    """The prefix width and packed range starts of the plan an earlier run wrote here, if any."""
    if not storage.exists(PLAN_LAYOUT_KEY):
        return None
    layout = json.loads(storage.read(PLAN_LAYOUT_KEY))
    return layout["width"], tuple(layout["starts"])


def write_layout(storage: Storage, layout: ShardLayout) -> None:
    """Store the layout (width, packed ranges): reruns into this output keep it, so their shards
    line up with the manifests already there (see ``steps.planning.run_plan.prepare_run``)."""
    storage.write(PLAN_LAYOUT_KEY, json.dumps({"width": layout.width, "starts": list(layout.starts)}).encode())


def write_shard_keys(
    storage: Storage, shards: Iterable[tuple[ShardRange, list[str]]], threads: int = 16
) -> list[ShardRange]:
    """Store each shard's sorted keys at ``plan_keys_key(name)`` (one JSON string a line) and
    return the shards to fan out over, sorted by name, each counting the keys stored (a key a
    manifest lists twice is planned once). At most ``threads`` shards are held at once.

    The key list lives in the output location, not in an artifact, so a 10^8-image plan does not
    travel inside the Metaflow artifact that every foreach task would load whole."""

    def write(item: tuple[ShardRange, list[str]]) -> ShardRange:
        shard, keys = item
        storage.write(plan_keys_key(shard.name), b"".join(encode_key(k) for k in keys))
        return replace(shard, images=len(keys))

    return sorted(map_bounded(write, shards, threads, in_flight=threads), key=lambda shard: shard.name)


def read_shard_keys(storage: Storage, shard_name: str) -> list[str]:
    """A shard's key list, as ``write_shard_keys`` stored it."""
    return decode_keys(storage.read(plan_keys_key(shard_name)))
