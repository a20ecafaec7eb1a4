"""A plan's shard key lists stored under the output, so the fan-out itself stays small at any scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from steps.io.concurrency import map_bounded
from steps.io.storage import Storage
from steps.layout import PLAN_LAYOUT_KEY, plan_keys_key
from steps.sharding.plan import Shard, ShardPlan


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


def write_plan(storage: Storage, plan: ShardPlan, threads: int = 16) -> list[ShardRef]:
    """Store each shard's key list under ``_plan/`` and return the refs to fan out over.

    The layout (width, packed ranges) is stored too: reruns into this output keep it, so their
    shards line up with the manifests already there (see ``steps.sharding.planning.prepare_run``).
    """
    storage.write(PLAN_LAYOUT_KEY, json.dumps({"width": plan.width, "starts": list(plan.starts)}).encode())

    def write(shard: Shard) -> ShardRef:
        key = plan_keys_key(shard.name)
        storage.write(key, "\n".join(shard.keys).encode())
        return ShardRef(shard.name, len(shard), key)

    return sorted(map_bounded(write, plan.shards, threads), key=lambda ref: ref.name)


def read_shard_keys(storage: Storage, keys_key: str) -> list[str]:
    """A shard's key list, from ``ShardRef.keys_key``."""
    text = storage.read(keys_key).decode()
    return text.split("\n") if text else []
