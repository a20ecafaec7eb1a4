"""TrainFlow's train step is a @parallel gang (``--nodes K``): compiled offline, its multi-node shape.

- Argo (``argo-workflows create --only-json``): the step is a Kubernetes JobSet, one control pod
  and ``num-parallel - 1`` workers, ``num-parallel`` coming from ``start`` (``--nodes``); every pod
  requests the step's GPUs; the workers find the main node through ``MF_MASTER_ADDR``, the control
  pod's stable DNS name in the JobSet's headless service.
- AWS Batch (``run --with batch``): Metaflow submits a multi-node parallel job; the job definition
  it registers has ``numNodes`` K, the main node 0, and every node the step's GPUs. Built here
  with Metaflow's own Batch job builder against the local Batch (moto) on loopback.
- Step Functions refuses @parallel steps: the deploy test covers the Argo side of TrainFlow only.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest

from tests.support.flows import REPO, S3Server
from tests.support.remote_harness import create_batch_queue, flow_command, jobset_manifest, metaflow_env

FLOW = REPO / "flows" / "train.py"
TRAIN_GPUS = tomllib.loads((REPO / "config" / "train.toml").read_text())["resources"]["gpu"]


@pytest.fixture(scope="module")
def env(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    bucket = s3_server.make_bucket("spot-batch-gang")[len("s3://") :]
    queue = create_batch_queue(s3_server.endpoint)
    return metaflow_env(s3_server.endpoint, bucket, queue, tmp_path_factory.mktemp("metaflow-home"))


@pytest.fixture(scope="module")
def argo(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = flow_command(FLOW, "argo-workflows", "create", "--only-json", env=env, cwd=tmp_path_factory.mktemp("gang"))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout[result.stdout.index("{") :])


def template(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in document["spec"]["templates"] if t["name"] == name)


def dag_task(document: dict[str, Any], name: str) -> dict[str, Any]:
    tasks = [task for t in document["spec"]["templates"] for task in t.get("dag", {}).get("tasks", [])]
    return next(task for task in tasks if task["name"] == name)


def jobset(document: dict[str, Any]) -> dict[str, Any]:
    return jobset_manifest(template(document, "train"))


def test_argo_compiles_the_gang_to_a_jobset_of_nodes_pods(argo: dict[str, Any]) -> None:
    spec = jobset(argo)
    assert spec["kind"] == "JobSet"
    jobs = {job["name"]: job for job in spec["spec"]["replicatedJobs"]}
    assert set(jobs) == {"control", "worker"}
    # K nodes: the control pod (node 0) and K - 1 workers, K being start's num-parallel (--nodes).
    assert jobs["control"]["replicas"] == 1
    assert jobs["worker"]["replicas"] == "{{=asInt(inputs.parameters.workerCount)}}"
    train = dag_task(argo, "train")
    passed = {p["name"]: p["value"] for p in train["arguments"]["parameters"]}
    assert passed["workerCount"] == "{{=sprig.int(sprig.sub(sprig.int(inputs.parameters['num-parallel']),1))}}"
    assert passed["num-parallel"] == "{{inputs.parameters.num-parallel}}"
    # A retry is a new JobSet: @retry restarts the whole gang, not one pod.
    assert passed["jobset-name"].endswith("{{retries}}")
    assert template(argo, "train")["retryStrategy"]["limit"] == 3
    for job in jobs.values():
        (container,) = job["template"]["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == str(TRAIN_GPUS)
        variables = {e["name"]: e.get("value") for e in container["env"]}
        # Every pod, the control one included, meets at the control pod's stable DNS name.
        name = "{{inputs.parameters.jobset-name}}"
        assert variables["MF_MASTER_ADDR"] == f"{name}-control-0-0.{name}.spot-batch.svc.cluster.local"
        assert variables["MF_WORLD_SIZE"] == "{{inputs.parameters.num-parallel}}"


def test_argo_joins_the_gang_before_end(argo: dict[str, Any]) -> None:
    join = dag_task(argo, "join")
    passed = {p["name"]: p["value"] for p in join["arguments"]["parameters"]}
    assert passed["num-parallel"] == "{{tasks.start.outputs.parameters.num-parallel}}"
    assert "join" in dag_task(argo, "end")["depends"]
