"""The region cost model on hand-built price books (every number below is worked out by hand),
the CLI, and ``choose_region`` as a sharded flow's start calls it."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from datetime import date

import pytest

from steps.cli import main
from steps.cost.model import Job, rank
from steps.cost.placement import batch_settings, choose_region
from steps.cost.prices import InstanceShape, PriceBook, PriceQuote, parse_snapshot, read_snapshot
from steps.cost.resources import StepResources, flow_resources
from steps.errors import ConfigError
from steps.report import Table
from tests.support.flows import SPOT_BATCH, S3Server

TODAY = date(2026, 11, 23)


GPU_SHAPE = InstanceShape(vcpus=4, memory_gib=16, gpus=1)


def book(*quotes: tuple[str, str, float, str]) -> PriceBook:
    """A price book of 1-GPU (region, instance type, spot $/h, band); on-demand is 2.5 x spot."""
    return PriceBook(
        quotes=tuple(PriceQuote(r, t, GPU_SHAPE, spot * 2.5, spot, band) for r, t, spot, band in quotes),
        band_rates={"<5%": 0.05, "10-15%": 0.15},
        cross_region_per_gb=0.02,
        snapshot_date=date(2026, 11, 1),
        bands_assumed=False,
    )


US_EU = book(("us-east-2", "g4dn.xlarge", 0.20, "<5%"), ("eu-west-1", "g4dn.xlarge", 0.30, "<5%"))


def test_data_heavy_job_stays_with_its_data() -> None:
    # eu-west-1: 2 h x $0.30 = $0.60 compute, no egress, rework 0.60 x 0.05 x (12 min / 2 h) = $0.003.
    # us-east-2: 2 h x $0.20 = $0.40 compute + 220 GB x $0.02 = $4.40 egress + rework $0.002 = $4.802.
    ranking = rank(US_EU, Job({"eu-west-1": 220}, {"g4dn.xlarge": 2}, checkpoint_minutes=12), today=TODAY)

    best, other = ranking.quotes
    assert (best.region, best.compute_cost, best.egress_cost) == ("eu-west-1", pytest.approx(0.60), 0)
    assert best.rework_cost == pytest.approx(0.003)
    assert other.total_cost == pytest.approx(4.802)
    assert ranking.explanation == (
        "eu-west-1 g4dn.xlarge where the data is: $0.60 expected, $4.20 less than us-east-2 g4dn.xlarge "
        "because it avoids moving 220 GB across regions ($4.40), despite a higher spot price ($0.300/h vs $0.200/h)."
    )


def test_compute_heavy_job_moves_to_the_cheapest_region() -> None:
    # 100 GPU-hours on 4 GPUs: 25 h tasks, a 6-minute checkpoint loses 0.1/25 = 0.4% of a task.
    # eu-west-1: $30.00 + rework 30 x 0.05 x 0.004 = $30.006. us-east-2: $20.00 + $0.20 egress + $0.004.
    job = Job({"eu-west-1": 10}, {"g4dn.xlarge": 100}, tasks=4, checkpoint_minutes=6)
    ranking = rank(US_EU, job, today=TODAY)

    assert [q.region for q in ranking.quotes] == ["us-east-2", "eu-west-1"]
    assert ranking.best.total_cost == pytest.approx(20.204)
    assert ranking.explanation == (
        "us-east-2 g4dn.xlarge: $20.20 expected, $9.80 less than eu-west-1 g4dn.xlarge where the data is "
        "because its spot price is lower ($0.200/h vs $0.300/h), despite $0.20 to move 10 GB."
    )


def test_interruption_risk_is_priced_as_expected_rework() -> None:
    # Same spot price; a checkpoint longer than the task loses the whole task: rework = compute x p.
    risky = book(("us-east-1", "g5.xlarge", 0.40, "10-15%"), ("us-west-2", "g5.xlarge", 0.40, "<5%"))
    ranking = rank(risky, Job({}, {"g5.xlarge": 10}, checkpoint_minutes=600), today=TODAY)

    assert [(q.region, q.rework_cost) for q in ranking.quotes] == [
        ("us-west-2", pytest.approx(0.20)),
        ("us-east-1", pytest.approx(0.60)),
    ]
    assert "because its interruption risk is lower (<5% vs 10-15%)" in ranking.explanation


def test_ties_rank_by_region_then_instance_type_whatever_the_input_order() -> None:
    quotes = [(r, t, 0.25, "<5%") for r in ("us-east-2", "us-east-1") for t in ("g5.xlarge", "g4dn.xlarge")]
    expected = [
        ("us-east-1", "g4dn.xlarge"),
        ("us-east-1", "g5.xlarge"),
        ("us-east-2", "g4dn.xlarge"),
        ("us-east-2", "g5.xlarge"),
    ]
    for order in (quotes, quotes[::-1]):
        job = Job({"eu-west-1": 50}, {"g5.xlarge": 3, "g4dn.xlarge": 3})
        ranking = rank(book(*order), job, today=TODAY)
        assert [(q.region, q.instance_type) for q in ranking.quotes] == expected
    assert "(equal cost: ties go to the region name, then the instance type)" in ranking.explanation


def test_a_single_candidate_says_so() -> None:
    ranking = rank(US_EU, Job({"us-east-2": 1}, {"g4dn.xlarge": 1}), regions=["us-east-2"], today=TODAY)
    assert ranking.explanation == "us-east-2 g4dn.xlarge where the data is: $0.20 expected, the only candidate."


@pytest.mark.parametrize(
    ("instance_types", "regions", "data", "message"),
    [
        (
            ["g4dn.xlarg"],
            None,
            {},
            "instance type 'g4dn.xlarg': expected an instance type priced in "
            "config/prices.toml; did you mean g4dn.xlarge?",
        ),
        (
            ["g4dn.xlarge"],
            ["us-east-3"],
            {},
            "region 'us-east-3': expected a region priced in config/prices.toml; did you mean us-east-2?",
        ),
        (
            ["g4dn.xlarge"],
            None,
            {"eu-wst-1": 5},
            "data region 'eu-wst-1': expected an AWS region name; did you mean eu-west-1",
        ),
    ],
)
def test_unknown_names_suggest_the_closest(
    instance_types: list[str], regions: list[str] | None, data: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("?", r"\?")):
        rank(US_EU, Job(data, dict.fromkeys(instance_types, 1.0)), regions)


def test_data_may_live_in_a_region_we_do_not_run_in() -> None:
    ranking = rank(US_EU, Job({"eu-central-1": 100}, {"g4dn.xlarge": 1}), today=TODAY)
    assert {q.moved_gb for q in ranking.quotes} == {100}


def test_the_issue_example_on_the_shipped_snapshot() -> None:
    job = Job({"eu-west-1": 220}, {"g4dn.xlarge": 2, "g5.xlarge": 2})
    ranking = rank(parse_snapshot(read_snapshot()), job, today=TODAY)
    assert ranking.best.region == "eu-west-1"
    assert "prices: snapshot config/prices.toml dated 2026-11-01 (22 days old)" in ranking.prices
    assert "interruption bands are assumed" in ranking.prices


CLI = [
    "rank",
    "--instance-types",
    "g4dn.xlarge,g5.xlarge",
    "--data-region",
    "eu-west-1",
    "--data-gb",
    "220",
    "--task-hours",
    "2",
    "--snapshot-only",
]


def test_cli_prints_the_table_best_first_and_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regions", *CLI]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["#", "region", "instance"]
    assert lines[1].split()[:3] == ["1", "eu-west-1", "g4dn.xlarge"]
    assert len([line for line in lines if line[:1].isdigit()]) == 10  # 5 regions x 2 types
    assert lines[-2].startswith("eu-west-1 g4dn.xlarge where the data is: $0.65 expected")
    assert lines[-1].startswith("prices: snapshot config/prices.toml dated 2026-11-01")


def test_cli_json_is_a_ranked_list() -> None:
    done = subprocess.run([SPOT_BATCH, "regions", *CLI, "--json"], capture_output=True, text=True, check=True)
    rows = json.loads(done.stdout)
    required = {"region", "instance_type", "spot_price", "compute_cost", "egress_cost", "total_cost", "risk"}
    assert required <= set(rows[0])
    assert rows[0]["region"] == "eu-west-1"
    assert [r["total_cost"] for r in rows] == sorted(r["total_cost"] for r in rows)
    assert "where the data is" in done.stderr
    assert "prices: snapshot" in done.stderr


def test_cli_unknown_instance_type_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regions", "rank", "--instance-types", "g5.xlrge", "--task-hours", "1", "--snapshot-only"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert re.match(r"^spot-batch: error: instance type 'g5\.xlrge'.*did you mean g5\.xlarge", line), line


REGIONS_CONFIG = {
    "local_region": "eu-west-1",
    "default_region": "us-east-2",
    "estimate": {"checkpoint_minutes": 10, "architectures": ["x86_64"]},
    "buckets": {"known-us": "us-east-2"},
    "regions": {
        "us-east-2": {"batch_queue": "q-use2", "staging_bucket": "s3://stage-use2"},
        "eu-west-1": {"batch_queue": "q-euw1", "staging_bucket": "s3://stage-euw1", "kubernetes_context": "k-eu"},
    },
}


# One GPU task on g4dn.xlarge spends 3.6 s per image: 1000 images = 1 task-hour.
THROUGHPUT = {
    "infer": {
        "basis": "instance",
        "instance_type": "g4dn.xlarge",
        "instances": {"g4dn.xlarge": {"ms_per_image": 3600.0, "source": "hand-made"}},
    },
    "preprocess": {"basis": "vcpu", "ms_per_image": 100.0, "source": "hand-made per vCPU"},
}
GPU_STEP = StepResources(cpu=4, gpu=1, memory_mb=15000)
CPU_STEP = StepResources(cpu=4, memory_mb=8000)


def choose(inputs: dict[str, int], images: int, prices: PriceBook = US_EU, **kw: object) -> object:
    settings = {"resources": GPU_STEP, "tasks": 1, "flow": "infer", "throughput": THROUGHPUT, **kw}
    return choose_region(inputs, images, regions_config=REGIONS_CONFIG, prices=prices, **settings)


def test_choose_region_keeps_a_big_local_input_at_home(tmp_path: object) -> None:
    # 500 GB in eu-west-1 (local_region) outweighs $0.10/h.
    choice = choose({str(tmp_path): 500 * 10**9}, 1000)
    assert (choice.region, choice.instance_type, choice.batch_queue) == ("eu-west-1", "g4dn.xlarge", "q-euw1")
    assert (choice.best.task_hours, choice.data_gb) == (1.0, {"eu-west-1": 500.0})
    assert [row["region"] for row in choice.region_table] == ["eu-west-1", "us-east-2"]
    report = choice.report()
    assert isinstance(report.sections[0], Table) and len(report.sections[0].rows) == 2
    assert choice.explanation in report.headline
    assert "AWS_DEFAULT_REGION=eu-west-1 python flows/<flow>.py run --with batch:queue=q-euw1" in report.headline


def test_choose_region_reads_bucket_regions(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    s3_server.client().create_bucket(Bucket="in-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    inputs = {"s3://in-eu/raw": 10**9, "s3://known-us/raw": 2 * 10**9, "s3://missing-bucket/x": 3 * 10**9}
    choice = choose(inputs, 1000)
    # in-eu: asked S3; known-us: from [buckets]; missing-bucket: lookup fails → default_region.
    assert choice.data_gb == {"eu-west-1": 1.0, "us-east-2": 5.0}
    assert choice.region == "us-east-2"

    monkeypatch.setenv("METAFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:1")  # no S3 at all: default, quickly
    assert choose({"s3://in-eu/raw": 1}, 1).data_gb == {"us-east-2": 1e-9}


def test_only_regions_with_a_queue_of_the_steps_kind_are_candidates(tmp_path: object) -> None:
    # eu-west-1 would win (the data is there) but has no CPU queue: a CPU step cannot land there.
    regions = {**REGIONS_CONFIG, "regions": {**REGIONS_CONFIG["regions"], "us-east-2": {"cpu_batch_queue": "c-use2"}}}
    gpu_book = book(("us-east-2", "c6i.xlarge", 0.20, "<5%"), ("eu-west-1", "c6i.xlarge", 0.10, "<5%"))
    cpu_only = tuple(replace(q, shape=InstanceShape(vcpus=4, memory_gib=8)) for q in gpu_book.quotes)
    prices = replace(gpu_book, quotes=cpu_only)
    settings = {"resources": CPU_STEP, "tasks": 1, "flow": "preprocess", "throughput": THROUGHPUT, "prices": prices}
    choice = choose_region({str(tmp_path): 10**9}, 1000, regions_config=regions, **settings)
    assert (choice.region, choice.batch_queue, choice.runner_up) == ("us-east-2", "c-use2", None)
    assert choice.reason.endswith("the only candidate.")
    with pytest.raises(
        ConfigError,
        match=r"^config/regions.toml \['eu-west-1', 'us-east-2'\]: expected a region with a cpu_batch_queue; "
        r'add cpu_batch_queue = "\.\.\." under \[regions\.<region>\]',
    ):
        choose_region({str(tmp_path): 10**9}, 1000, regions_config=REGIONS_CONFIG, **settings)


def test_batch_settings_put_a_run_on_the_regions_queue() -> None:
    assert batch_settings("eu-west-1", REGIONS_CONFIG) == ({"AWS_DEFAULT_REGION": "eu-west-1"}, ["batch:queue=q-euw1"])
    with pytest.raises(ConfigError, match=r"^region 'eu-west-1': expected a region with a cpu_batch_queue"):
        batch_settings("eu-west-1", REGIONS_CONFIG, CPU_STEP)
    with pytest.raises(ConfigError, match=r"^region 'us-west-2': expected a region with a batch_queue"):
        batch_settings("us-west-2", REGIONS_CONFIG)


def test_dispatched_runs_go_to_the_queue_of_their_work_steps_kind() -> None:
    regions = {"regions": {"eu-west-1": {"batch_queue": "gpu-q", "cpu_batch_queue": "cpu-q"}}}
    queues = {flow: batch_settings("eu-west-1", regions, flow_resources(flow))[1] for flow in ("preprocess", "infer")}
    assert queues == {"preprocess": ["batch:queue=cpu-q"], "infer": ["batch:queue=gpu-q"]}
    assert flow_resources("train").gpu >= 1 and flow_resources("preprocess").gpu == 0


def test_a_tiny_job_is_not_called_a_tie() -> None:
    # us-east-2: 0.001 h x $0.20 + 5% rework = $0.00021; eu-west-1: $0.000315 + $0.00002 egress.
    ranking = rank(US_EU, Job({"us-east-2": 0.001}, {"g4dn.xlarge": 0.001}), today=TODAY)
    assert ranking.best.region == "us-east-2"
    assert ranking.explanation.startswith("us-east-2 g4dn.xlarge where the data is: $0.00021 expected, $0.00012 less")
    assert ranking.explanation.endswith(
        "because its spot price is lower ($0.200/h vs $0.300/h) and it avoids moving 1 MB across regions ($0.000020)."
    )
