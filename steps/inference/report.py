"""InferFlow's report card: totals, model, throughput, labels, sample predictions, shards, rejects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from steps.imaging.codec import thumbnail_jpeg
from steps.inference.predictions import Scores, score
from steps.io.storage import Storage
from steps.report import Chart, Images, Report, Table, bar_chart_png
from steps.sharding.report import durations_table, rejects_table, shard_table, throughput_chart, totals_table
from steps.sharding.summary import RunSummary, ShardStats

SAMPLE_IMAGES = 6


@dataclass(frozen=True)
class Sample:
    """One prediction shown on the card."""

    key: str
    label: str
    score: float
    truth: str | None


def shard_scores(
    manifest: pa.Table, labels: pd.DataFrame | None, sample_keys: Sequence[str]
) -> tuple[Scores, list[Sample]]:
    """What the join needs from a shard's predictions, so it never loads all of them."""
    predictions = manifest.select(["key", "status", "label", "score"]).to_pandas(use_threads=False)
    truth = {} if labels is None else dict(zip(labels["key"], labels["truth"], strict=True))
    by_key = predictions.set_index("key")
    samples = [Sample(k, by_key.at[k, "label"], float(by_key.at[k, "score"]), truth.get(k)) for k in sample_keys]
    return score(predictions, labels), samples


def build_report(
    stats: Sequence[ShardStats],
    summary: RunSummary,
    *,
    model: dict,
    scores: Scores,
    samples: Sequence[Sample],
    source: Storage,
    output: str,
) -> Report:
    """The card: totals, model, throughput, label histogram, sample predictions, shards, rejects."""
    report = Report("InferFlow", summary.headline("Predicted", output))
    report.sections.append(totals_table(summary))
    report.sections.append(Table("Model", ["field", "value"], [[k, v] for k, v in model.items()]))
    if any(not s.skipped for s in stats):
        report.sections.append(throughput_chart(stats))
    counts = scores.label_counts.most_common(40)
    if counts:
        chart = bar_chart_png([c[0] for c in counts], [c[1] for c in counts], "images", "images per predicted label")
        report.sections.append(Chart("Predicted labels", chart))
    if samples:
        report.sections.append(
            Images(
                "Sample predictions (predicted label, score; truth)",
                [
                    (f"{s.label} {s.score:.2f}; {s.truth or '?'}", thumbnail_jpeg(source.read(s.key)))
                    for s in samples[:SAMPLE_IMAGES]
                ],
            )
        )
    report.sections.append(shard_table(stats))
    report.sections.append(durations_table(stats))
    report.sections.append(rejects_table(stats))
    return report
