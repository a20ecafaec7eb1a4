"""The predictions InferFlow writes, and a reader for them.

Layout under the output root (one row per input key, none dropped, none twice):
    predictions/<shard>/part-NNNNN.parquet   key, status (ok/rejected), reason, then the task's
                                             columns: label, score, top_k_labels, top_k_scores
                                             (classify), or what the model returns
    _manifests/<shard>.parquet               the shard's completion marker, written last

    spot-batch predictions OUTPUT [--labels INPUT_DIR_OR_S3]
    # or, in Python:  from steps.inference.predictions import load_predictions; df = load_predictions(OUTPUT)
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from steps.io.concurrency import map_bounded
from steps.io.parquet import parquet_to_table
from steps.io.storage import Storage, open_storage
from steps.output.layout import LABELS_FILE, PREDICTIONS_DIR

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("label", pa.string()),
        ("score", pa.float32()),
        ("top_k_labels", pa.list_(pa.string())),
        ("top_k_scores", pa.list_(pa.float32())),
    ]
)


def prediction_parts(uri: str, threads: int = 16) -> tuple[Storage, list[str]]:
    """The output's storage and the keys of its committed parts, in order."""
    storage = open_storage(uri, threads)
    return storage, sorted(o.key for o in storage.list(PREDICTIONS_DIR + "/") if o.key.endswith(".parquet"))


def load_table(uri: str, columns: Sequence[str] | None = None, threads: int = 16) -> pa.Table:
    """Every committed part under ``<uri>/predictions/`` as one Arrow table (parts in key order)."""
    storage, parts = prediction_parts(uri, threads)

    def read(key: str) -> pa.Table:
        table = parquet_to_table(storage.read(key))
        return table if columns is None else table.select(list(columns))

    tables = list(map_bounded(read, parts, threads))
    if tables:
        return pa.concat_tables(tables)
    return (SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])).empty_table()


def load_predictions(uri: str, columns: Sequence[str] | None = None, threads: int = 16) -> pd.DataFrame:
    """Every committed part under ``<uri>/predictions/`` as one DataFrame, sorted by key."""
    table = load_table(uri, columns, threads)
    return table.to_pandas().sort_values("key", kind="stable").reset_index(drop=True)


def load_labels(storage: Storage) -> pd.DataFrame | None:
    """``labels.csv`` (key,label) at the root of ``storage``, or None when there is none."""
    if not storage.exists(LABELS_FILE):
        return None
    return pd.read_csv(io.BytesIO(storage.read(LABELS_FILE)), dtype=str).rename(columns={"label": "truth"})


@dataclass(frozen=True)
class Scores:
    """Label counts and, for labelled images, (truth, predicted) counts: a shard's small aggregate
    of its predictions (at most classes² pairs, never one row per image); shards' add up."""

    label_counts: Counter[str] = field(default_factory=Counter)
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)  # (truth, predicted) → images

    @property
    def labelled(self) -> int:
        return sum(self.confusion.values())

    @property
    def correct(self) -> int:
        return sum(n for (truth, predicted), n in self.confusion.items() if truth == predicted)

    def __add__(self, other: Scores) -> Scores:
        return Scores(self.label_counts + other.label_counts, self.confusion + other.confusion)

    def to_dict(self) -> dict:
        """Plain data for an artifact (``dataclasses.asdict`` would mangle the Counters)."""
        return {
            "label_counts": dict(self.label_counts),
            "confusion": [[truth, predicted, n] for (truth, predicted), n in sorted(self.confusion.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Scores:
        return cls(Counter(data["label_counts"]), Counter({(t, p): n for t, p, n in data["confusion"]}))

    def per_class(self) -> list[tuple[str, int, int]]:
        """(true class, labelled images, correct), most labelled first, then by name."""
        labelled: Counter[str] = Counter()
        correct: Counter[str] = Counter()
        for (truth, predicted), n in self.confusion.items():
            labelled[truth] += n
            correct[truth] += n if truth == predicted else 0
        return sorted(((c, labelled[c], correct[c]) for c in labelled), key=lambda row: (-row[1], row[0]))

    def accuracy(self) -> dict:
        """Top-1 accuracy over the predicted images that have a ground-truth label."""
        return {
            "labelled": self.labelled,
            "correct": self.correct,
            "accuracy": round(self.correct / self.labelled, 4) if self.labelled else None,
        }


def score(predictions: pd.DataFrame, labels: pd.DataFrame | None) -> Scores:
    ok = predictions[predictions["status"] == "ok"]
    counts = Counter(ok["label"].value_counts().to_dict())
    if labels is None:
        return Scores(counts)
    joined = ok.merge(labels[["key", "truth"]], on="key", how="inner")
    pairs = Counter(zip(joined["truth"].astype(str), joined["label"].astype(str), strict=True))
    return Scores(counts, pairs)


def describe(predictions: pd.DataFrame, labels: pd.DataFrame | None = None, types: pa.Schema | None = None) -> str:
    """A few lines for people: counts, top labels, rejects and, with labels, accuracy; for other
    tasks, the model's columns and their types (``types``)."""
    status = predictions["status"].value_counts()
    lines = [
        f"{len(predictions)} rows: {int(status.get('ok', 0))} predicted, {int(status.get('rejected', 0))} rejected",
        f"duplicate keys: {int(predictions['key'].duplicated().sum())}",
    ]
    if "label" not in predictions.columns or "top_k_labels" not in predictions.columns:
        fields = [f for f in types or [] if f.name not in ("key", "status", "reason")]
        lines.append("columns: " + ", ".join(f"{f.name} {f.type}" for f in fields))
        return "\n".join(lines)
    scores = score(predictions, labels)
    lines.append("top labels: " + ", ".join(f"{label} {count}" for label, count in scores.label_counts.most_common(10)))
    if labels is not None:
        result = scores.accuracy()
        lines.append(f"accuracy: {result['accuracy']} ({result['correct']}/{result['labelled']} labelled images)")
    return "\n".join(lines)
