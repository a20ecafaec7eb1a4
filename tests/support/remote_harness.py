"""What the remote-execution tests share: the flows to cover, a Metaflow configuration for AWS
Batch / Step Functions / Argo pointed at a loopback moto server, and the Batch resources
(compute environment + job queue) those commands look up.

Nothing here talks to a non-loopback address: the endpoint is always ``http://127.0.0.1:PORT``
and the tests run under ``tests.support.flows.LOOPBACK_ONLY``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3

from tests.support.flows import LOOPBACK_ONLY, REPO

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/spot-batch:test"
NAMESPACE = "spot-batch"
ACCOUNT = "123456789012"


def flow_files() -> list[Path]:
    """Every runnable ``flows/*.py``: one that starts a flow under ``__main__`` (new flows are covered
    automatically; a base class such as ``flows/sharded.py`` is not a flow to run)."""

    def defines_flow(path: Path) -> bool:
        return any(
            isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"
            for node in ast.parse(path.read_text()).body
        )

    return sorted(p for p in (REPO / "flows").glob("*.py") if defines_flow(p))


@dataclass(frozen=True)
class BatchQueue:
    """A job queue backed by one managed EC2 compute environment, as Metaflow expects to find."""

    queue: str
    compute_environment: str
    job_role_arn: str


def create_batch_queue(endpoint: str, name: str = "spot-batch-test") -> BatchQueue:
    """Create (idempotently) IAM roles, a MANAGED EC2 compute environment and a queue in moto."""
    session = boto3.session.Session(region_name=LOOPBACK_ONLY["AWS_DEFAULT_REGION"])
    iam, ec2, batch = (session.client(s, endpoint_url=endpoint) for s in ("iam", "ec2", "batch"))
    existing = batch.describe_job_queues(jobQueues=[name])["jobQueues"]
    role_arns = {}
    for role, service in (("batch-service", "batch"), ("batch-job", "ecs-tasks"), ("sfn", "states")):
        role_name = f"{name}-{role}"
        if not existing:
            trust = {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": f"{service}.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ]
            }
            iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))
        role_arns[role] = f"arn:aws:iam::{ACCOUNT}:role/{role_name}"
    if not existing:
        profile = iam.create_instance_profile(InstanceProfileName=f"{name}-instance")["InstanceProfile"]
        subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]]
        groups = [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]]
        environment = batch.create_compute_environment(
            computeEnvironmentName=f"{name}-ce",
            type="MANAGED",
            state="ENABLED",
            serviceRole=role_arns["batch-service"],
            computeResources={
                "type": "EC2",
                "minvCpus": 0,
                "desiredvCpus": 0,
                "maxvCpus": 16,
                "instanceTypes": ["optimal"],
                "subnets": subnets[:1],
                "securityGroupIds": groups[:1],
                "instanceRole": profile["Arn"],
            },
        )
        batch.create_job_queue(
            jobQueueName=name,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}],
        )
    return BatchQueue(queue=name, compute_environment=f"{name}-ce", job_role_arn=role_arns["batch-job"])


def metaflow_env(endpoint: str, bucket: str, queue: BatchQueue, home: Path) -> dict[str, str]:
    """Metaflow configuration (as environment variables) for Batch, Step Functions and Argo.

    boto3 honours ``AWS_ENDPOINT_URL``, so Metaflow's Batch, Step Functions and DynamoDB clients
    reach moto; ``METAFLOW_S3_ENDPOINT_URL`` points the S3 datastore at the same server.
    """
    home.mkdir(parents=True, exist_ok=True)
    return {
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{bucket}/metaflow",
        "METAFLOW_DATATOOLS_S3ROOT": f"s3://{bucket}/data",
        "METAFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL": endpoint,
        "METAFLOW_BATCH_JOB_QUEUE": queue.queue,
        "METAFLOW_BATCH_CONTAINER_IMAGE": IMAGE,
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": queue.job_role_arn,
        "METAFLOW_SFN_IAM_ROLE": f"arn:aws:iam::{ACCOUNT}:role/{queue.queue}-sfn",
        "METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE": f"arn:aws:iam::{ACCOUNT}:role/{queue.queue}-sfn",
        "METAFLOW_SFN_DYNAMO_DB_TABLE": "spot-batch-sfn-test",
        "METAFLOW_KUBERNETES_NAMESPACE": NAMESPACE,
        "METAFLOW_KUBERNETES_CONTAINER_IMAGE": IMAGE,
        "METAFLOW_KUBERNETES_SERVICE_ACCOUNT": "spot-batch",
        # Configuration comes only from these variables, never from ~/.metaflowconfig; production
        # tokens (`step-functions create`) are written under this home.
        "METAFLOW_HOME": str(home),
    }


def flow_command(
    flow: Path, *args: str, env: dict[str, str], cwd: Path, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """``python <flow> --no-pylint <args>`` in ``cwd`` with the loopback-only environment + ``env``."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, str(flow), "--no-pylint", *args],
        cwd=cwd,
        env={**os.environ, **LOOPBACK_ONLY, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Step:
    """One step as Metaflow resolves it (config values applied): type, successors, decorators."""

    name: str
    type: str
    next: list[str]
    foreach_artifact: str | None
    decorators: dict[str, dict[str, object]]

    def attribute(self, decorator: str, name: str) -> object | None:
        """A decorator attribute, None when the decorator or the value is absent."""
        value = self.decorators.get(decorator, {}).get(name)
        return None if value in (None, "None") else value


def flow_graph(flow: Path, cwd: Path, *options: str, env: dict[str, str] | None = None) -> dict[str, Step]:
    """The flow's graph from Metaflow itself (``output-raw --json``), decorators resolved; ``options``
    go before the command (``--with batch``: the Batch decorator's attributes as Metaflow merges them)."""
    result = flow_command(flow, *options, "--quiet", "output-raw", "--json", env=env or {}, cwd=cwd)
    assert result.returncode == 0, result.stderr
    graph = json.loads(result.stdout[result.stdout.index("{") :])["graph"]
    return {
        name: Step(
            name=name,
            type=node["type"],
            next=node["next"],
            foreach_artifact=node.get("foreach_artifact"),
            decorators={d["name"]: d["attributes"] for d in node["decorators"]},
        )
        for name, node in graph.items()
    }


def jobset_manifest(template: dict) -> dict:
    """The JobSet an Argo template creates for a @parallel step (YAML; Argo's unquoted ``{{=...}}``
    values are quoted so it parses)."""
    import yaml

    manifest = template["resource"]["manifest"]
    return yaml.safe_load(re.sub(r"^(\s*[\w-]+: )(\{\{.*\}\})\s*$", r"\1'\2'", manifest, flags=re.MULTILINE))
