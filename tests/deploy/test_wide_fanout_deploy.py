"""The settings docs/deploy.md gives for 10^4 shards compile: Argo's workflow parallelism follows
``--max-workers``, and Step Functions runs the shard foreach as a distributed Map whose
concurrency follows ``--max-workers`` (an inline Map runs at most 40 at once)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.flows import REPO, S3Server
from tests.support.remote_harness import create_batch_queue, flow_command, metaflow_env

FLOW = REPO / "flows" / "preprocess.py"


def compile_json(scheduler: str, env: dict[str, str], cwd: Path, *options: str) -> dict:
    result = flow_command(FLOW, scheduler, "create", "--only-json", *options, env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout[result.stdout.index("{") :])


def maps(states: dict) -> list[dict]:
    found = []
    for state in states.values():
        if state.get("Type") == "Map":
            found.append(state)
            found += maps(state.get("Iterator", {}).get("States", {}))
    return found


@pytest.fixture(scope="module")
def env(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    bucket = s3_server.make_bucket("spot-batch-wide")[len("s3://") :]
    queue = create_batch_queue(s3_server.endpoint)
    settings = metaflow_env(s3_server.endpoint, bucket, queue, tmp_path_factory.mktemp("metaflow-home"))
    return {**settings, "METAFLOW_SFN_S3_DISTRIBUTED_MAP_OUTPUT_PATH": f"s3://{bucket}/sfn-map"}


def test_argo_parallelism_follows_max_workers(env: dict[str, str], tmp_path: Path) -> None:
    template = compile_json("argo-workflows", env, tmp_path, "--max-workers", "500")
    assert template["spec"]["parallelism"] == 500


def test_step_functions_distributed_map_for_wide_foreach(env: dict[str, str], tmp_path: Path) -> None:
    machine = compile_json("step-functions", env, tmp_path, "--use-distributed-map", "--max-workers", "500")
    shard_map = next(m for m in maps(machine["States"]) if "process_shard" in m["Iterator"]["States"])
    assert shard_map["Iterator"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert shard_map["MaxConcurrency"] == 500
