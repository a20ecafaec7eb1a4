"""``spot-batch plan``: the plan start would make, printed, with nothing written anywhere."""

import hashlib
import json
from pathlib import Path

import pytest

from steps.cli import main


def make_input(root: Path, count: int) -> Path:
    root.mkdir()
    for i in range(count):
        (root / (hashlib.sha256(str(i).encode()).hexdigest() + ".jpg")).write_bytes(b"xyz")
    return root


def test_plan_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = make_input(tmp_path / "in", 300)
    assert main(["plan", str(source), str(tmp_path / "out"), "--flow", "infer", "--shard-size", "40", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["images"], facts["shards"], facts["input_bytes"]) == (300, 8, 900)  # 300 / 40 → 8 shards
    assert facts["largest_task_minutes"] == pytest.approx(facts["largest_shard"] * facts["ms_per_image"] / 60_000)
    assert facts["cost_basis"] == "g4dn.xlarge" and facts["spot_dollars"] is not None
    assert not (tmp_path / "out").exists()
    assert main(["plan", str(source), str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "shards:        1 (prefix width 0)" in text and "10 task minutes" in text


def test_plan_refusal_is_one_line_with_the_settings_to_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = make_input(tmp_path / "in", 300)
    args = ["plan", str(source), str(tmp_path / "out"), "--task-minutes", "0.0005", "--max-shards", "2"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "pass --max-shards" in error and "--max-num-splits" in error
