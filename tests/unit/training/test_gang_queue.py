"""`--nodes K` on AWS Batch: `start` refuses a job queue with Spot compute environments in one line
(Batch does not run multi-node parallel jobs on Spot), asking the local Batch (moto on loopback)."""

from __future__ import annotations

import boto3
import pytest

from steps.errors import ConfigError
from steps.training.gang_queue import check_gang_queue
from tests.support.flows import S3Server
from tests.support.remote_harness import create_batch_queue


def spot_queue(endpoint: str, name: str) -> str:
    """A queue whose first compute environment is Spot and second On-Demand (like the stack's GPU queue)."""
    batch = boto3.client("batch", endpoint_url=endpoint)
    plain = create_batch_queue(endpoint)  # roles, subnets, an On-Demand (EC2) environment
    on_demand = batch.describe_compute_environments(computeEnvironments=[plain.compute_environment])
    resources = on_demand["computeEnvironments"][0]["computeResources"]
    spot = batch.create_compute_environment(
        computeEnvironmentName=f"{name}-spot",
        type="MANAGED",
        state="ENABLED",
        serviceRole=on_demand["computeEnvironments"][0]["serviceRole"],
        computeResources={**resources, "type": "SPOT", "bidPercentage": 100},
    )
    batch.create_job_queue(
        jobQueueName=name,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": spot["computeEnvironmentArn"]},
            {"order": 2, "computeEnvironment": on_demand["computeEnvironments"][0]["computeEnvironmentArn"]},
        ],
    )
    return plain.queue


def test_a_gang_on_a_spot_queue_fails_in_start_naming_the_fix(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    on_demand_queue = spot_queue(s3_server.endpoint, "gpu-mixed")
    on_batch = {"AWS_BATCH_JOB_ID": "job-1", "AWS_BATCH_JQ_NAME": "gpu-mixed", "METAFLOW_DEFAULT_METADATA": "service"}
    with pytest.raises(ConfigError) as refused:
        check_gang_queue(2, on_batch)
    message = str(refused.value)
    assert message.startswith("--nodes 2: expected an AWS Batch queue without Spot compute environments")
    assert "queue gpu-mixed uses gpu-mixed-spot" in message and "--with batch:queue=" in message
    assert "\n" not in message
    # One node, an On-Demand queue, or a local run: nothing to refuse (and nothing asked).
    check_gang_queue(1, on_batch)
    check_gang_queue(2, {**on_batch, "AWS_BATCH_JQ_NAME": on_demand_queue})
    check_gang_queue(2, {})


def test_a_gang_on_batch_without_the_metadata_service_fails_in_start_naming_the_fix() -> None:
    on_batch = {"AWS_BATCH_JOB_ID": "job-1", "AWS_BATCH_JQ_NAME": "gpu-ondemand"}
    for metadata in ({}, {"METAFLOW_DEFAULT_METADATA": "local"}):
        with pytest.raises(ConfigError) as refused:
            check_gang_queue(2, {**on_batch, **metadata})
        message = str(refused.value)
        assert message.startswith("--nodes 2: expected Metaflow's metadata service for a gang on AWS Batch")
        assert "this run's metadata is local" in message and "METAFLOW_DEFAULT_METADATA=service" in message
        assert "\n" not in message
    check_gang_queue(1, on_batch)  # one node needs no gang
