"""A plan's shard key lists stored under the output, so the fan-out itself stays small at any scale."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from steps.io.concurrency import map_bounded
from steps.io.storage import Storage
from steps.output.layout import PLAN_LAYOUT_KEY, plan_keys_key
from steps.planning.prefixes import ShardLayout, ShardRange
from steps.planning.spill import decode_keys, encode_key


@dataclass(frozen=True)
class ShardRef:
    """A shard as the fan-out sees it: small enough to pass to every task.

    The key list itself lives at ``keys_key`` in the output location, so a 10^8-image plan does
    not travel inside a Metaflow artifact that every foreach task would load whole.
    """

    name: str
    images: int
    keys_key: str


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
) -> list[ShardRef]:
    """Store each shard's sorted keys at ``_plan/<shard>.jsonl`` (one JSON string a line) and
    return the refs to fan out over, sorted by name. At most ``threads`` shards are held at once."""

    def write(item: tuple[ShardRange, list[str]]) -> ShardRef:
        shard, keys = item
        key = plan_keys_key(shard.name)
        storage.write(key, b"".join(encode_key(k) for k in keys))
        return ShardRef(shard.name, len(keys), key)

    return sorted(map_bounded(write, shards, threads, in_flight=threads), key=lambda ref: ref.name)


def read_shard_keys(storage: Storage, keys_key: str) -> list[str]:
    """A shard's key list, from ``ShardRef.keys_key``."""
    return decode_keys(storage.read(keys_key))
