"""The AWS infrastructure templates (config/cloudformation/): cfn-lint clean, and the properties
that make spot GPU batch work cheap and safe, asserted on the parsed templates."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from tests.support.flows import REPO

TEMPLATES = REPO / "config" / "cloudformation"
GPU_FAMILIES = {"g4dn", "g5", "g6"}
SPOT_STRATEGIES = {"SPOT_PRICE_CAPACITY_OPTIMIZED", "SPOT_CAPACITY_OPTIMIZED"}


def load(name: str) -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATES / name))


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r.get("Properties", {}) for name, r in template["Resources"].items() if r["Type"] == kind}


def test_cfn_lint_passes() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run(
        [str(cfn_lint), *map(str, sorted(TEMPLATES.glob("*.yaml")))], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["network.yaml", "batch.yaml"])
def test_templates_deploy_to_any_region(name: str) -> None:
    text = (TEMPLATES / name).read_text()
    assert not re.search(r"\b(us|eu|ap|sa|ca|me|af)-(east|west|north|south|central|northeast|southeast)-\d\b", text)


def test_private_subnets_reach_s3_through_a_gateway_endpoint() -> None:
    template = load("network.yaml")
    subnets = resources(template, "AWS::EC2::Subnet")
    private = {n: p for n, p in subnets.items() if p.get("MapPublicIpOnLaunch") is False}
    assert len(private) >= 2
    associated = {
        p["SubnetId"]["Ref"]: p["RouteTableId"]["Ref"]
        for p in resources(template, "AWS::EC2::SubnetRouteTableAssociation").values()
    }
    (endpoint,) = resources(template, "AWS::EC2::VPCEndpoint").values()
    assert endpoint["VpcEndpointType"] == "Gateway"
    assert endpoint["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"}
    assert {associated[n] for n in private} <= {t["Ref"] for t in endpoint["RouteTableIds"]}


def test_gpu_spot_environment_scales_to_zero_on_gpu_families() -> None:
    environments = resources(load("batch.yaml"), "AWS::Batch::ComputeEnvironment")
    gpu = {
        n: e["ComputeResources"]
        for n, e in environments.items()
        if set(e["ComputeResources"]["InstanceTypes"]) <= GPU_FAMILIES
    }
    spot = [c for c in gpu.values() if c["Type"] == "SPOT"]
    assert spot and all(c["AllocationStrategy"] in SPOT_STRATEGIES for c in spot)
    assert any(c["Type"] == "EC2" for c in gpu.values()), "an on-demand fallback"
    assert all(e["ComputeResources"]["MinvCpus"] == 0 for e in environments.values())


def test_job_queues_try_spot_first_then_on_demand_and_gangs_get_on_demand_only() -> None:
    template = load("batch.yaml")
    environments = resources(template, "AWS::Batch::ComputeEnvironment")
    kinds = {}
    for name, queue in resources(template, "AWS::Batch::JobQueue").items():
        ordered = sorted(queue["ComputeEnvironmentOrder"], key=lambda o: o["Order"])
        kinds[name] = [environments[o["ComputeEnvironment"]["Ref"]]["ComputeResources"]["Type"] for o in ordered]
    # Batch runs multi-node parallel jobs (TrainFlow --nodes K) on On-Demand capacity only.
    assert kinds.pop("GpuOnDemandQueue") == ["EC2"]
    assert kinds and all(order == ["SPOT", "EC2"] for order in kinds.values()), kinds


def test_job_retry_strategy_retries_lost_instances_only() -> None:
    (definition,) = resources(load("batch.yaml"), "AWS::Batch::JobDefinition").values()
    strategy = definition["RetryStrategy"]
    rules = strategy["EvaluateOnExit"]
    assert 1 <= strategy["Attempts"] <= 10 and len(rules) <= 5
    assert rules[0] == {"OnStatusReason": "Host EC2*", "Action": "RETRY"}
    assert rules[-1] == {"OnReason": "*", "Action": "EXIT"}
    gpu = {r["Type"]: r["Value"] for r in definition["ContainerProperties"]["ResourceRequirements"]}
    assert int(gpu["GPU"]) >= 1


def test_image_repository_and_parameters() -> None:
    template = load("batch.yaml")
    (repository,) = resources(template, "AWS::ECR::Repository").values()
    assert repository["ImageScanningConfiguration"]["ScanOnPush"] is True
    assert {"MetaflowBucketName", "DataBucketNames"} <= set(template["Parameters"])


def test_iam_is_least_privilege() -> None:
    template = load("batch.yaml")
    roles = resources(template, "AWS::IAM::Role")
    assert roles
    for name, role in roles.items():
        for arn in role.get("ManagedPolicyArns", []):
            assert "FullAccess" not in json.dumps(arn), name
        for policy in role.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert all(a != "*" and not a.endswith(":*") for a in actions), (name, actions)
                resource = json.dumps(statement["Resource"])
                assert resource != '"*"', (name, statement)
                if any(a.startswith("s3:") for a in actions):  # only the project's buckets
                    assert "MetaflowBucketName" in resource or "DataBucketNames" in resource, (name, statement)
