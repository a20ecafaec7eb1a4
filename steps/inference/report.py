"""InferFlow's report card: totals, model, throughput, labels, accuracy per class, confusion,
misclassified next to correct samples, shards, rejects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from steps.imaging.codec import thumbnail_jpeg
from steps.inference.predictions import Scores, score
from steps.io.storage import Storage
from steps.report import Chart, Images, Report, Table, bar_chart, human
from steps.stats.report import durations_table, rejects_tables, shard_table, throughput_chart, totals_table
from steps.stats.summary import RunSummary, ShardStats

SAMPLE_IMAGES = 6  # per row of the card
SAMPLES_PER_SHARD = 3  # of each kind (misclassified, correct) a shard sends the join
CONFUSION_CLASSES = 12  # the most labelled classes get a row and a column; the rest are "other"
PER_CLASS_ROWS = 30


@dataclass(frozen=True)
class Sample:
    """One prediction shown on the card."""

    key: str
    label: str
    score: float
    truth: str | None

    @property
    def correct(self) -> bool | None:
        return None if self.truth is None else self.truth == self.label

    def caption(self) -> str:
        truth = "" if self.truth is None else f"; truth {self.truth}"
        return f"{self.label} {self.score:.2f}{truth}"


def shard_scores(
    manifest: pa.Table, labels: pd.DataFrame | None, sample_keys: Sequence[str]
) -> tuple[Scores, list[Sample]]:
    """What the join needs from a shard's predictions, so it never loads all of them: the scores,
    and with labels the first misclassified and correct images (else ``sample_keys``)."""
    predictions = manifest.select(["key", "status", "label", "score"]).to_pandas(use_threads=False)
    truth = {} if labels is None else dict(zip(labels["key"], labels["truth"], strict=True))
    ok = predictions[predictions["status"] == "ok"]
    if truth:
        labelled = ok[ok["key"].isin(truth.keys())]
        right = labelled["label"] == labelled["key"].map(truth)
        keys = [*labelled[~right]["key"][:SAMPLES_PER_SHARD], *labelled[right]["key"][:SAMPLES_PER_SHARD]]
    else:
        keys = list(sample_keys)
    by_key = predictions.set_index("key")
    samples = [Sample(k, by_key.at[k, "label"], float(by_key.at[k, "score"]), truth.get(k)) for k in keys]
    return score(predictions, labels), samples


def confusion_table(scores: Scores) -> Table:
    """Rows = true class, columns = predicted, for the most labelled classes; the rest is "other"."""
    classes = [c for c, _, _ in scores.per_class()[:CONFUSION_CLASSES]]
    columns = [*classes, "other"]
    counts: dict[tuple[str, str], int] = {}
    for (truth, predicted), n in scores.confusion.items():
        row, column = (truth if truth in classes else "other"), (predicted if predicted in classes else "other")
        counts[row, column] = counts.get((row, column), 0) + n
    rows = [[row, *[counts.get((row, c), 0) for c in columns]] for row in columns]
    return Table(
        "Confusion matrix (images; rows = true class, columns = predicted)", ["true \\ predicted", *columns], rows
    )


def per_class_table(scores: Scores) -> Table:
    rows = scores.per_class()
    shown = f" (the {PER_CLASS_ROWS} most labelled of {len(rows)})" if len(rows) > PER_CLASS_ROWS else ""
    return Table(
        f"Accuracy per true class{shown}",
        ["class", "labelled images", "correct", "accuracy"],
        [[c, n, k, f"{k / n:.1%}"] for c, n, k in rows[:PER_CLASS_ROWS]],
    )


def sample_rows(samples: Sequence[Sample], source: Storage) -> list[Images]:
    """Misclassified images next to correct ones when labels exist; else a few predictions."""

    def row(title: str, chosen: Sequence[Sample]) -> list[Images]:
        images = [(s.caption(), thumbnail_jpeg(source.read(s.key))) for s in chosen[:SAMPLE_IMAGES]]
        return [Images(title, images)] if images else []

    if all(s.correct is None for s in samples):
        return row("Sample predictions (predicted label, score)", samples)
    return [
        *row("Misclassified (predicted label, score; truth)", [s for s in samples if s.correct is False]),
        *row("Correct (predicted label, score; truth)", [s for s in samples if s.correct]),
    ]


def build_report(
    stats: Sequence[ShardStats],
    summary: RunSummary,
    *,
    model: dict,
    scores: Scores,
    samples: Sequence[Sample],
    source: Storage,
    output: str,
    task_sections: Sequence[Table | Images | Chart] = (),
) -> Report:
    """The card: totals, model, throughput, labels, accuracy, samples, the task's own sections
    (``steps.inference.task_report``), shards, rejects."""
    report = Report("InferFlow", summary.headline("Predicted", output))
    report.sections.append(totals_table(summary))
    report.sections.append(Table("Model", ["field", "value"], [[k, human(v)] for k, v in model.items()]))
    if any(not s.skipped for s in stats):
        report.sections.append(throughput_chart(stats))
    counts = scores.label_counts.most_common(40)
    if counts:
        chart = bar_chart([c[0] for c in counts], [c[1] for c in counts], "images")
        report.sections.append(Chart("Predicted labels", chart))
    if scores.labelled:
        report.sections += [per_class_table(scores), confusion_table(scores)]
    report.sections += sample_rows(samples, source)
    report.sections += task_sections
    report.sections.append(shard_table(stats))
    report.sections.append(durations_table(stats))
    report.sections.extend(rejects_tables(stats))
    return report
