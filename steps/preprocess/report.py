"""PreprocessFlow's report card: totals, shards, before/after samples, rejects."""

from __future__ import annotations

from collections.abc import Sequence

from steps.imaging.codec import thumbnail_jpeg
from steps.io.storage import Storage
from steps.output.layout import edges_key, resized_key
from steps.report import Images, Report
from steps.stats.report import durations_table, rejects_tables, shard_table, throughput_chart, totals_table
from steps.stats.summary import RunSummary, ShardStats


def build_report(stats: Sequence[ShardStats], summary: RunSummary, source: Storage, target: Storage) -> Report:
    """The card of a preprocessing run: totals, per-shard throughput, before/after, rejects."""
    report = Report("PreprocessFlow", summary.headline("Preprocessed", target.uri))
    report.sections.append(totals_table(summary))
    if any(not s.skipped for s in stats):
        report.sections.append(throughput_chart(stats))
    samples = [key for s in stats for key in s.samples][:4]
    for key in samples:
        report.sections.append(
            Images(
                key,
                [
                    ("original", thumbnail_jpeg(source.read(key))),
                    ("resized", target.read(resized_key(key))),
                    ("edges", target.read(edges_key(key))),
                ],
            )
        )
    report.sections.append(shard_table(stats))
    report.sections.append(durations_table(stats))
    report.sections.extend(rejects_tables(stats))
    return report
