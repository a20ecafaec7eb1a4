"""Is a run where the selector would put it? Its region from its environment (never the metadata
endpoint), judged against its own ranking (hand-made price book, numbers worked out by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.cost.run_region import LOCAL, UNKNOWN, judge_run_region, region_of_run
from tests.unit.cost.test_regions import choose

ON_BATCH = {"AWS_BATCH_JOB_ID": "8c1f-job"}


@pytest.fixture
def no_compute_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("AWS_BATCH_JOB_ID", "KUBERNETES_SERVICE_HOST", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_local_run_is_local_whatever_region_its_shell_names(no_compute_env: pytest.MonkeyPatch) -> None:
    no_compute_env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert region_of_run() == LOCAL


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({**ON_BATCH, "AWS_DEFAULT_REGION": "eu-west-1"}, "eu-west-1"),  # what Metaflow sets on Batch jobs
        ({**ON_BATCH, "AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "eu-west-1"}, "us-east-2"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "AWS_REGION": "us-west-2"}, "us-west-2"),
        (ON_BATCH, UNKNOWN),
    ],
)
def test_a_remote_run_is_in_the_region_its_environment_names(
    no_compute_env: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        no_compute_env.setenv(name, value)
    assert region_of_run() == expected


def compute_heavy(tmp_path: Path):
    # 1 GB in eu-west-1 (local_region), 10 task-hours of g4dn.xlarge in one task:
    # us-east-2 $2.00 + $0.02 egress + $0.00167 rework = $2.0217; eu-west-1 $3.00 + $0.0025 = $3.0025.
    return choose({str(tmp_path): 10**9}, 10_000)


def test_a_run_elsewhere_is_told_what_moving_would_save(tmp_path: Path) -> None:
    verdict = judge_run_region(compute_heavy(tmp_path), "eu-west-1")
    assert (verdict.run_region, verdict.chosen) == ("eu-west-1", "us-east-2 g4dn.xlarge")
    assert verdict.saving_usd == pytest.approx(3.0025 - 2.0216667, abs=1e-6)
    assert verdict.sentence.startswith(
        "This run is in eu-west-1, not the selector's choice: the next run would save $0.98 of $3.00 expected there. "
        "us-east-2 g4dn.xlarge: $2.02"
    )
    assert "AWS_DEFAULT_REGION=us-east-2 python flows/<flow>.py run --with batch:queue=q-use2" in verdict.sentence


def test_a_run_in_the_chosen_region_saves_nothing_by_moving(tmp_path: Path) -> None:
    verdict = judge_run_region(compute_heavy(tmp_path), "us-east-2")
    assert verdict.saving_usd == 0
    assert (
        verdict.sentence == "This run is in us-east-2, the selector's choice (us-east-2 g4dn.xlarge, $2.02 expected)."
    )


def test_a_local_run_an_unknown_region_and_a_region_that_is_no_candidate_are_said_so(tmp_path: Path) -> None:
    choice = compute_heavy(tmp_path)
    local, unknown, elsewhere = (judge_run_region(choice, r) for r in (LOCAL, UNKNOWN, "ap-south-1"))
    assert local.sentence.startswith("Local run: on AWS Batch this work would go to us-east-2 g4dn.xlarge, $2.02")
    assert unknown.sentence.startswith("This run's region is unknown: neither AWS_REGION nor AWS_DEFAULT_REGION")
    assert elsewhere.sentence.startswith("This run is in ap-south-1, which is not a candidate (no [regions.ap-south-1]")
    assert {v.saving_usd for v in (local, unknown, elsewhere)} == {None}
    assert local.to_artifact()["chosen_usd"] == pytest.approx(2.0216667, abs=1e-6)
