"""Rejects are counted by reason, whatever their per-key details, with the first few examples each."""

from __future__ import annotations

from steps.report import Table
from steps.stats.rejects import count_reasons, first_examples, reason_kind
from steps.stats.report import rejects_tables
from steps.stats.summary import ShardStats

REJECTS = [
    ("a.jpg", "corrupt or truncated image data: broken data stream when reading image file"),
    ("b.jpg", "not a recognised image format (12 bytes)"),
    ("c.jpg", "corrupt or truncated image data: image file is truncated (3 bytes not processed)"),
    ("d.jpg", "empty file (0 bytes)"),
    ("e.jpg", "output name resized/e.jpg is taken by e.png; rename one of the two"),
    ("f.jpg", "output name resized/f.jpg is taken by f.png; rename one of the two"),
    ("g.jpg", "not a recognised image format (40 bytes)"),
    ("h.jpg", "not a recognised image format (41 bytes)"),
    ("i.jpg", "not a recognised image format (42 bytes)"),
]


def test_reasons_are_counted_by_kind() -> None:
    assert reason_kind("output name resized/e.jpg is taken by e.png; rename one") == "output name … is taken by …"
    assert count_reasons(reason for _, reason in REJECTS) == (
        ("not a recognised image format", 4),
        ("corrupt or truncated image data", 2),
        ("output name … is taken by …", 2),
        ("empty file", 1),
    )
    kept = first_examples(REJECTS, per_reason=3)
    assert [key for key, _ in kept] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg", "g.jpg", "h.jpg"]


def test_the_card_adds_shards_counts_and_keeps_a_few_examples_per_reason() -> None:
    def shard(name: str, rejects: list[tuple[str, str]]) -> ShardStats:
        reasons = count_reasons(r for _, r in rejects)
        return ShardStats(
            name, 10, 10 - len(rejects), len(rejects), False, 1.0, reasons=reasons, rejects=first_examples(rejects)
        )

    counts, examples = rejects_tables([shard("0", REJECTS), shard("1", REJECTS[:2])])
    assert isinstance(counts, Table) and counts.title == "Rejected inputs by reason (11 in all)"
    assert counts.rows[:2] == [["not a recognised image format", 5], ["corrupt or truncated image data", 3]]
    formats = [row for row in examples.rows if row[1].startswith("not a recognised")]
    assert [row[0] for row in formats] == ["b.jpg", "g.jpg", "h.jpg"]  # first 3 of 5, shard by shard
