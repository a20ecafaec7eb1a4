"""A training gang on AWS Batch needs On-Demand capacity: Batch does not run multi-node parallel
jobs on compute environments that use Spot Instances ("Compute environment considerations for
MNP" in the AWS Batch user guide), so such a job would wait in RUNNABLE forever.

``start`` runs on the same queue as the gang (``--with batch`` applies to every step), so it asks
Batch about its own queue (``AWS_BATCH_JQ_NAME``) and fails in one line naming the fix.

A gang on Batch also needs Metaflow's metadata service: with local metadata, Metaflow 2.19 mangles
the other nodes' run id in their command and the main node cannot see them (Netflix/metaflow PR
2574; ``tests/deploy/test_train_gang_deploy.py`` pins it), so the job would fail after it started.
"""

from __future__ import annotations

from collections.abc import Mapping

from steps.errors import ConfigError
from steps.progress import log

SPOT_TYPES = ("SPOT", "FARGATE_SPOT")


def spot_environments(queue: str) -> list[str]:
    """Names of the Spot compute environments behind AWS Batch job queue ``queue``."""
    import boto3

    batch = boto3.client("batch")
    (found,) = batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
    arns = [entry["computeEnvironment"] for entry in found["computeEnvironmentOrder"]]
    environments = batch.describe_compute_environments(computeEnvironments=arns)["computeEnvironments"]
    return sorted(
        env["computeEnvironmentName"]
        for env in environments
        if env.get("computeResources", {}).get("type", "").upper() in SPOT_TYPES
    )


def check_gang_queue(nodes: int, environ: Mapping[str, str]) -> None:
    """On AWS Batch, ``--nodes`` > 1 needs the metadata service and a job queue without Spot
    compute environments."""
    queue = environ.get("AWS_BATCH_JQ_NAME")
    if nodes < 2 or "AWS_BATCH_JOB_ID" not in environ or not queue:
        return
    # Batch jobs get the driver's default metadata provider in this variable (Metaflow's batch.py).
    metadata = environ.get("METAFLOW_DEFAULT_METADATA", "local")
    if metadata != "service":
        raise ConfigError(
            "--nodes",
            nodes,
            f"Metaflow's metadata service for a gang on AWS Batch (this run's metadata is {metadata}: "
            "Metaflow cannot start the other nodes of a gang on local metadata)",
            "set METAFLOW_DEFAULT_METADATA=service and its URL (config/metaflow/batch.json does), or --nodes 1",
        )
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        spot = spot_environments(queue)
    except (BotoCoreError, ClientError) as error:
        # Batch's Describe calls take no resource ARNs: a least-privilege job role may lack them.
        log(f"could not check job queue {queue} for Spot compute environments ({error}); it must be On-Demand")
        return
    if spot:
        raise ConfigError(
            "--nodes",
            nodes,
            f"an AWS Batch queue without Spot compute environments (Batch runs multi-node jobs on On-Demand "
            f"only; queue {queue} uses {', '.join(spot)})",
            "pass --with batch:queue=<an On-Demand queue> (the CloudFormation stack's <project>-gpu-ondemand), "
            "or --nodes 1 with more GPUs per instance",
        )
