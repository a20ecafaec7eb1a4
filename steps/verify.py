"""Check an output location for completeness, duplicates and stale leftovers.

    spot-batch verify OUTPUT --input INPUT [--manifest URI] [--input-format auto|images|webdataset]

Every input key must be accounted for exactly once across the shard manifests (``ok`` or
``rejected``); every ``ok`` row must have its output files (preprocessing) or exactly one row in
the prediction parts (inference). Nothing may be left of shards the plan does not have, and no
resized image or edge map may belong to a key that is not an input. Prints each problem on one
line and a verdict whose counts agree with it; exits 1 if there is any problem.

For an input of WebDataset tars the input keys are the tars: each must be accounted for by its
rows (``<tar key>/<member>``, at least one, each once), and every row must come from an input tar.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from steps.io.input_format import input_format
from steps.io.parquet import parquet_to_table
from steps.io.storage import Storage, open_storage
from steps.output.layout import (
    EDGES_DIR,
    MANIFEST_DIR,
    PLAN_DIR,
    PREDICTIONS_DIR,
    RESIZED_DIR,
    edges_key,
    manifest_shard_name,
    planned_shard_name,
    resized_key,
)
from steps.planning.inputs import input_pages
from steps.planning.inventory import manifest_pages
from steps.planning.tars import resolve_format


@dataclass
class Verification:
    inputs: int = 0
    accounted: int = 0  # input keys with no problem: in one manifest row, with their outputs
    problems: list[str] = field(default_factory=list)
    other_problems: int = 0  # problems not about one input key (shards, stale files)

    @property
    def ok(self) -> bool:
        return not self.problems

    def verdict(self, output: str) -> str:
        state = "OK" if self.ok else f"FAILED ({len(self.problems)} problems)"
        other = f"; {self.other_problems} problems with shards or stale files" if self.other_problems else ""
        return f"{state}: {self.accounted}/{self.inputs} input keys accounted for exactly once{other} in {output}"


def _keys_in(storage: Storage, directory: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for obj in storage.list(directory + "/"):
        if obj.key.endswith(".parquet"):
            counts.update(parquet_to_table(storage.read(obj.key)).column("key").to_pylist())
    return counts


def _shard_problems(target: Storage) -> list[str]:
    planned = {planned_shard_name(o.key) for o in target.list(PLAN_DIR + "/")} - {None}
    finished = {manifest_shard_name(o.key) for o in target.list(MANIFEST_DIR + "/")}
    return [f"shard {name}: no manifest (incomplete)" for name in sorted(planned - finished)] + [
        f"shard {name}: manifest of a shard the plan does not have (stale)" for name in sorted(finished - planned)
    ]


def _manifest_rows(target: Storage) -> tuple[Counter[str], list[str]]:
    rows: Counter[str] = Counter()
    ok_keys: list[str] = []
    for obj in target.list(MANIFEST_DIR + "/"):
        table = parquet_to_table(target.read(obj.key))
        keys, statuses = table.column("key").to_pylist(), table.column("status").to_pylist()
        rows.update(keys)
        ok_keys += [k for k, s in zip(keys, statuses, strict=True) if s == "ok"]
    return rows, ok_keys


def _prediction_problems(rows: Counter[str], predictions: Counter[str]) -> list[tuple[str, str]]:
    return (
        [(key, f"{n} prediction rows") for key, n in sorted(predictions.items()) if n != 1]
        + [(key, "no prediction row") for key in sorted(set(rows) - set(predictions))]
        + [(key, "a prediction row but in no manifest (stale)") for key in sorted(set(predictions) - set(rows))]
    )


def verify(output_uri: str, input_uri: str, manifest: str = "", input_format_name: str = "auto") -> Verification:
    """``manifest``: the run's ``--manifest`` (an S3 Inventory manifest.json or a key list), whose
    keys are then the inputs, as the run planned them, instead of a listing of ``input_uri``;
    ``input_format_name``: the run's ``--input-format``."""
    source, target = open_storage(input_uri), open_storage(output_uri)
    pages = manifest_pages(manifest, source) if manifest else input_pages(source)
    resolved, pages = resolve_format(pages, input_format_name, manifest or input_uri)
    unit_of = input_format(resolved).unit_of
    expected = {o.key for page in pages for o in page}
    shard_problems = _shard_problems(target)
    rows, ok_keys = _manifest_rows(target)
    covered = {unit_of(key) for key in rows}
    found = [(key, "missing from every manifest") for key in sorted(expected - covered)]
    found += [(key, f"in manifests {n} times") for key, n in sorted(rows.items()) if n > 1]
    found += [(key, "in a manifest but not an input") for key in sorted(rows) if unit_of(key) not in expected]

    stale_files: list[str] = []
    predictions = _keys_in(target, PREDICTIONS_DIR)
    if predictions:
        found += _prediction_problems(rows, predictions)
    else:
        present = {o.key for o in target.list(RESIZED_DIR + "/")} | {o.key for o in target.list(EDGES_DIR + "/")}
        wanted = [(key, out) for key in ok_keys for out in (resized_key(key), edges_key(key))]
        found += [(key, f"missing {out}") for key, out in wanted if out not in present]
        inputs = expected if resolved == "images" else {key for key in rows if unit_of(key) in expected}
        owned = {out for key in inputs for out in (resized_key(key), edges_key(key))}
        stale_files = [f"{name}: derived from no input key (stale)" for name in sorted(present - owned)]

    found.sort(key=lambda problem: problem[0])  # stable: a key's problems stay in the order found
    result = Verification(inputs=len(expected), other_problems=len(shard_problems) + len(stale_files))
    result.accounted = len(expected - {unit_of(key) for key, _ in found})
    result.problems = shard_problems + [f"{key}: {text}" for key, text in found] + stale_files
    return result
