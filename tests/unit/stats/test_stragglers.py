"""Shard durations: stragglers are the clearly slow shards, each with the reasons the numbers give."""

from steps.stats.report import SHARD_ROWS, durations_table, shard_table, throughput_chart
from steps.stats.stragglers import ShardTiming, durations
from steps.stats.summary import ShardStats


def typical(name: str) -> ShardTiming:
    return ShardTiming(name, seconds=10.0, images=100)


def test_stragglers_are_named_slowest_first_with_their_reasons() -> None:
    found = durations(
        [
            *(typical(f"s{i}") for i in range(6)),
            ShardTiming("retried", seconds=25.0, images=100, attempts=2, reused_chunks=3),
            ShardTiming("big", seconds=30.0, images=300),
            ShardTiming("slow", seconds=16.0, images=100),
            ShardTiming("fine", seconds=14.0, images=100),  # under 1.5x the median: not a straggler
        ]
    )
    assert found.median_s == 10.0 and found.slowest_s == 30.0
    assert [s.timing.name for s in found.stragglers] == ["big", "retried", "slow"]
    big, retried, slow = found.stragglers
    assert big.why == ("large input: 300 images vs 100 typical",)
    assert retried.why[0] == "retried: 2 attempts" and "resumed: 3 chunks reused" in retried.why[2]
    assert "slow per image: 250 ms vs 100 ms typical" in retried.why[1]
    assert slow.why[0].startswith("slow per image: 160 ms")
    assert found.headline.endswith("stragglers: big, retried, slow")


def test_even_shards_or_a_single_shard_have_no_stragglers() -> None:
    assert durations([typical("a"), typical("b"), ShardTiming("c", 12.0, 100)]).stragglers == ()
    assert durations([ShardTiming("only", 100.0, 10)]).stragglers == ()
    assert durations([]).headline == "no shard was processed by this run; no stragglers"


def test_the_report_table_lists_processed_shards_slowest_first() -> None:
    stats = [
        ShardStats("a", 100, 99, 1, skipped=False, seconds=10.0),
        ShardStats("b", 100, 100, 0, skipped=False, seconds=40.0),
        ShardStats("c", 100, 100, 0, skipped=False, seconds=11.0),
        ShardStats("d", 100, 100, 0, skipped=True, seconds=0.0),
    ]
    table = durations_table(stats)
    assert [row[0] for row in table.rows] == ["b", "c", "a"]
    assert table.rows[0][-1].startswith("3.6x median: ") and table.rows[1][-1] == ""
    assert "stragglers: b" in table.title


def test_a_run_of_thousands_of_shards_keeps_its_card_tables_bounded() -> None:
    stats = [ShardStats(f"{i:04x}", 10, 10, 0, skipped=False, seconds=1.0 + i % 7) for i in range(3000)]
    table, chart = shard_table(stats[::-1]), throughput_chart(stats)
    assert [row[0] for row in table.rows] == [f"{i:04x}" for i in range(SHARD_ROWS)]
    assert (
        table.title
        == chart.title.replace("Throughput per shard", "Shards")
        == (f"Shards (the first {SHARD_ROWS} of 3000 by name)")
    )
    assert len(durations_table(stats).rows) == 20
    assert shard_table(stats[:5]).title == "Shards" and len(shard_table(stats[:5]).rows) == 5
