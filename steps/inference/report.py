"""InferFlow's run summary and report card.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from steps.imaging.codec import thumbnail_jpeg
from steps.inference.predictions import Scores, score
from steps.io.storage import Storage
from steps.report import Chart, Images, Report, Table, bar_chart_png
from steps.sharding.report import rejects_table, shard_table, throughput_chart, totals_table
from steps.sharding.summary import ShardStats, summarize

SAMPLE_IMAGES = 6


def inference_summary(
    stats: Sequence[ShardStats],
    model_seconds: Sequence[float],
    devices: Sequence[str],
    seconds: float,
    scores: dict | None,
) -> dict:
    """The ``summary`` artifact. ``gpu_seconds`` is what a GPU was held for (task time of shards
    processed on CUDA, what spot instances bill); ``model_seconds`` is how much of it the model
    was busy (transfer + forward + top-k), so their ratio is the GPU utilisation."""
    summary = {("predicted" if k == "processed" else k): v for k, v in summarize(stats, seconds).items()}
    gpu_seconds = sum(s.seconds for s, d in zip(stats, devices, strict=True) if not s.skipped and d.startswith("cuda"))
    summary.update(
        model_seconds=round(sum(model_seconds), 2),
        gpu_seconds=round(gpu_seconds, 2),
        devices=", ".join(sorted(set(devices))),
    )
    if scores is not None:
        summary.update(scores)
    return summary


def inference_headline(summary: dict, output: str) -> str:
    """One human sentence for the end of a run."""
    skipped = summary["skipped_shards"]
    reuse = f"; {skipped} of {summary['shards']} shards were already complete and skipped" if skipped else ""
    scored = (
        f", accuracy {summary['accuracy']:.1%} on {summary['labelled']} labelled images"
        if summary.get("accuracy") is not None
        else ""
    )
    return (
        f"Predicted {summary['images']} images in {summary['seconds']:.1f} s ({summary['images_per_second']:.1f} "
        f"images/s this run; model busy {summary['model_seconds']:.1f} s on {summary['devices'] or 'no device'}, "
        f"{summary['gpu_seconds']:.1f} GPU-seconds): {summary['predicted']} predicted, {summary['rejected']} "
        f"rejected{scored}, {summary['shards']} shards{reuse}. Output: {output}"
    )


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
    summary: dict,
    *,
    model: dict,
    scores: Scores,
    samples: Sequence[Sample],
    source: Storage,
    output: str,
) -> Report:
    """The card: totals, model, throughput, label histogram, sample predictions, shards, rejects."""
    report = Report("InferFlow", inference_headline(summary, output))
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
    report.sections.append(rejects_table(stats))
    return report
