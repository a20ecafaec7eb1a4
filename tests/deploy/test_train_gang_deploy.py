"""TrainFlow's train step is a @parallel gang (``--nodes K``): compiled offline, its multi-node shape.

- Argo (``argo-workflows create --only-json``): the step is a Kubernetes JobSet, one control pod
  and ``num-parallel - 1`` workers, ``num-parallel`` coming from ``start`` (``--nodes``); every pod
  requests the step's GPUs; the workers find the main node through ``MF_MASTER_ADDR``, the control
  pod's stable DNS name in the JobSet's headless service.
- AWS Batch (``run --with batch``): Metaflow submits a multi-node parallel job. The job definition
  it registers has ``numNodes`` K, the main node 0 and two node ranges (``0:0``, ``1:K-1``); the
  job it submits overrides each range's command and asks, on every node, for the step's vCPUs,
  memory and GPUs. Built with Metaflow's own Batch job builder, the train step's ``@batch``
  attributes as Metaflow merges them, the definition registered in the local Batch (moto) on
  loopback; the submission is recorded once botocore has validated it and goes no further (moto
  ignores ``nodeOverrides``). With local metadata (task IDs 1, 2, ...) Metaflow 2.19 rewrites every
  copy of the task ID in the other nodes' command, so a Batch gang needs the metadata service.
- Step Functions refuses @parallel steps: the deploy test covers the Argo side of TrainFlow only.
"""

from __future__ import annotations

import json
import os
import tomllib
from typing import Any

import pytest

from tests.support.flows import REPO, S3Server
from tests.support.remote_harness import (
    Step,
    create_batch_queue,
    flow_command,
    flow_graph,
    jobset_manifest,
    metaflow_env,
)

FLOW = REPO / "flows" / "train.py"
NODES = 2  # --nodes: Metaflow's num_parallel
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


class Submitted(Exception):
    """Raised at the SubmitJob call once botocore has validated it: the job goes no further."""


def batch_gang_requests(
    endpoint: str, step: Step, run_id: str, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, dict[str, Any]]:
    """The RegisterJobDefinition and SubmitJob requests Metaflow's Batch job builder makes for the
    control task of the train step's gang of ``NODES`` (``batch step train --num-parallel 2``, as
    the runtime runs it), with the step's ``@batch`` attributes as Metaflow merged them."""
    from metaflow.metaflow_config import DEFAULT_RUNTIME_LIMIT
    from metaflow.metaflow_environment import MetaflowEnvironment
    from metaflow.plugins.aws.batch.batch import Batch

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    batch = Batch(None, MetaflowEnvironment(None))
    requests: dict[str, dict[str, Any]] = {}

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        requests[model.name] = params

    def stop(**_: Any) -> None:
        raise Submitted

    events = batch._client._client.meta.events
    events.register("before-parameter-build.batch.*", record)
    events.register("before-call.batch.SubmitJob", stop)
    attrs = {"flow_name": "TrainFlow", "step_name": "train", "run_id": run_id, "task_id": task_id, "retry_count": "0"}
    # batch_cli's step command for a multi-node job: the placeholder becomes each node's split index.
    step_cli = (
        f"python -u train.py --quiet step train --run-id {run_id} --task-id {task_id} "
        "--input-paths ${METAFLOW_INPUT_PATHS_0} --retry-count 0 --max-user-code-retries 3 "
        "--ubf-context ubf_control [multinode-args]"
    )
    job = batch.create_job(
        "train",
        step_cli,
        attrs,
        "{}",
        "0" * 40,
        "s3://spot-batch-gang/metaflow/TrainFlow/data/00/" + "0" * 40,
        "s3",
        step.attribute("batch", "image"),
        step.attribute("batch", "queue"),
        iam_role=step.attribute("batch", "iam_role"),
        cpu=step.attribute("batch", "cpu"),
        gpu=step.attribute("batch", "gpu"),
        memory=step.attribute("batch", "memory"),
        shared_memory=step.attribute("batch", "shared_memory"),
        run_time_limit=DEFAULT_RUNTIME_LIMIT,  # the step has no @timeout
        use_tmpfs=step.attribute("batch", "use_tmpfs"),
        tmpfs_tempdir=step.attribute("batch", "tmpfs_tempdir"),
        tmpfs_path=step.attribute("batch", "tmpfs_path"),
        env={"METAFLOW_FLOW_FILENAME": "train.py", "METAFLOW_RUN_ID": run_id},
        attrs={**{f"metaflow.{k}": v for k, v in attrs.items()}, "metaflow.user": "tester"},
        num_parallel=NODES,
    )
    with pytest.raises(Submitted):
        job.execute()
    return requests


@pytest.fixture(scope="module")
def train_step(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Step:
    return flow_graph(FLOW, tmp_path_factory.mktemp("graph"), "--with", "batch", env=env)["train"]


def node_overrides(submitted: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["targetNodes"]: o["containerOverrides"] for o in submitted["nodeOverrides"]["nodePropertyOverrides"]}


def test_batch_submits_the_gang_as_a_multinode_job_every_node_with_the_steps_gpus(
    s3_server: S3Server, train_step: Step, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, task_id = "187", "5321"  # as the metadata service numbers them
    requests = batch_gang_requests(s3_server.endpoint, train_step, run_id, task_id, monkeypatch)
    definition, submitted = requests["RegisterJobDefinition"], requests["SubmitJob"]
    assert definition["type"] == "multinode" and "containerProperties" not in definition
    shape = definition["nodeProperties"]
    assert (shape["numNodes"], shape["mainNode"]) == (NODES, 0)
    ranges = {r["targetNodes"]: r["container"] for r in shape["nodeRangeProperties"]}
    assert set(ranges) == {"0:0", "1:1"}
    shared_memory = train_step.attribute("resources", "shared_memory")
    assert all(c["linuxParameters"]["sharedMemorySize"] == shared_memory for c in ranges.values())
    # moto registered it: the job names the definition by the ARN it returned.
    assert submitted["jobDefinition"].endswith(f"job-definition/{definition['jobDefinitionName']}:1")

    overrides = node_overrides(submitted)
    assert set(overrides) == {"0:0", "1:1"}
    expected = {
        "VCPU": str(train_step.attribute("resources", "cpu")),
        "MEMORY": str(train_step.attribute("resources", "memory")),
        "GPU": str(TRAIN_GPUS),
    }
    for container in overrides.values():
        assert {r["type"]: r["value"] for r in container["resourceRequirements"]} == expected
        variables = {e["name"]: e["value"] for e in container["environment"]}
        # Every node knows the control task; Batch itself tells the others the main node's address.
        assert variables["MF_PARALLEL_CONTROL_TASK_ID"] == task_id
        assert variables["METAFLOW_RUN_ID"] == run_id
    main, other = (overrides[n]["command"][-1] for n in ("0:0", "1:1"))
    assert f"--run-id {run_id} --task-id {task_id} " in main and "--ubf-context ubf_control" in main
    assert "--split-index 0" in main and f"MF_PATHSPEC=TrainFlow/{run_id}/train/{task_id} " in main
    # The other nodes: task <id>-node-<index> (what the control task waits for), split index = node index.
    node_task = f"{task_id}-node-$AWS_BATCH_JOB_NODE_INDEX"
    assert f"--run-id {run_id} --task-id {node_task} " in other and "--ubf-context ubf_task" in other
    assert "--split-index $AWS_BATCH_JOB_NODE_INDEX" in other and f"train/{node_task} " in other
    assert (
        other.replace(node_task, task_id)
        .replace("ubf_task", "ubf_control")
        .replace("--split-index $AWS_BATCH_JOB_NODE_INDEX", "--split-index 0")
        == main
    )


def test_batch_hands_every_node_the_main_nodes_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a node other than the main one Batch sets the main node's private address; Metaflow's
    Batch decorator turns it into ``current.parallel`` (main_ip, num_nodes, node_index), which
    the train step hands to the gang's rendezvous."""
    from metaflow.plugins.aws.batch.batch_decorator import _setup_multinode_environment

    batch_sets = {
        "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS": "10.0.1.7",
        "AWS_BATCH_JOB_NUM_NODES": "2",
        "AWS_BATCH_JOB_NODE_INDEX": "1",
    }
    for name, value in batch_sets.items():
        monkeypatch.setenv(name, value)
    for name in ("MF_PARALLEL_MAIN_IP", "MF_PARALLEL_NUM_NODES", "MF_PARALLEL_NODE_INDEX"):
        monkeypatch.setenv(name, "unset")  # restored after the test
    _setup_multinode_environment()
    assert [os.environ[f"MF_PARALLEL_{n}"] for n in ("MAIN_IP", "NUM_NODES", "NODE_INDEX")] == ["10.0.1.7", "2", "1"]


def test_a_batch_gang_needs_the_metadata_service(
    s3_server: S3Server, train_step: Step, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With local metadata the control task's ID is a small number (2: start was 1), and Metaflow
    2.19 replaces every copy of it in the other nodes' command (Netflix/metaflow PR 2574): their
    run ID no longer names the run. docs/training.md says to use the metadata service."""
    run_id, task_id = "1729", "2"
    other = node_overrides(
        batch_gang_requests(s3_server.endpoint, train_step, run_id, task_id, monkeypatch)["SubmitJob"]
    )
    command = other["1:1"]["command"][-1]
    assert f"--run-id {run_id} " not in command and "--run-id 172-node-$AWS_BATCH_JOB_NODE_INDEX9 " in command
