"""Check an output location for completeness and duplicates.

    spot-batch verify OUTPUT --input INPUT

Every input key must be accounted for exactly once across the shard manifests (``ok`` or
``rejected``); every ``ok`` row must have its output files (preprocessing) or exactly one row in
the prediction parts (inference). Prints each problem on one line and exits 1 if there is any.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from steps.io.parquet import parquet_to_table
from steps.io.storage import Storage, open_storage
from steps.layout import MANIFEST_DIR, PLAN_DIR, PLAN_LAYOUT_KEY, PREDICTIONS_DIR, edges_key, resized_key
from steps.sharding.inputs import list_inputs


@dataclass
class Verification:
    inputs: int = 0
    accounted: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def verdict(self, output: str) -> str:
        state = "OK" if self.ok else f"FAILED ({len(self.problems)} problems)"
        return f"{state}: {self.accounted}/{self.inputs} input keys accounted for exactly once in {output}"


def _keys_in(storage: Storage, directory: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for obj in storage.list(directory + "/"):
        if obj.key.endswith(".parquet"):
            counts.update(parquet_to_table(storage.read(obj.key)).column("key").to_pylist())
    return counts


def verify(output_uri: str, input_uri: str) -> Verification:
    source, target = open_storage(input_uri), open_storage(output_uri)
    expected = set(list_inputs(source))
    result = Verification(inputs=len(expected))
    planned = {
        o.key.rsplit("/", 1)[-1].removesuffix(".txt") for o in target.list(PLAN_DIR + "/") if o.key != PLAN_LAYOUT_KEY
    }
    finished = {o.key.rsplit("/", 1)[-1].removesuffix(".parquet") for o in target.list(MANIFEST_DIR + "/")}
    result.problems += [f"shard {name}: no manifest (incomplete)" for name in sorted(planned - finished)]

    rows: Counter[str] = Counter()
    ok_keys: list[str] = []
    for obj in target.list(MANIFEST_DIR + "/"):
        table = parquet_to_table(target.read(obj.key))
        keys, statuses = table.column("key").to_pylist(), table.column("status").to_pylist()
        rows.update(keys)
        ok_keys += [k for k, s in zip(keys, statuses, strict=True) if s == "ok"]
    result.accounted = len(expected & set(rows))
    result.problems += [f"{key}: missing from every manifest" for key in sorted(expected - set(rows))]
    result.problems += [f"{key}: in manifests {n} times" for key, n in sorted(rows.items()) if n > 1]
    result.problems += [f"{key}: in a manifest but not an input" for key in sorted(set(rows) - expected)]

    predictions = _keys_in(target, PREDICTIONS_DIR)
    if predictions:
        result.problems += [f"{key}: {n} prediction rows" for key, n in sorted(predictions.items()) if n != 1]
        result.problems += [f"{key}: no prediction row" for key in sorted(set(rows) - set(predictions))]
    else:
        present = {o.key for o in target.list("resized/")} | {o.key for o in target.list("edges/")}
        for key in ok_keys:
            result.problems += [
                f"{key}: missing {out}" for out in (resized_key(key), edges_key(key)) if out not in present
            ]
    return result

