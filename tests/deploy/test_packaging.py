"""The Metaflow code package of every flow carries what its remote tasks import and read.

A task on Batch or Kubernetes starts from the code package alone (no checkout, no `pip install
-e .`): it must contain the `steps` library and the configuration. `package list` is what
Metaflow would upload; `package save` writes the archive itself.
"""

from __future__ import annotations

import json
import tarfile
import tomllib
from pathlib import Path

import pytest

from tests.support.flows import REPO
from tests.support.remote_harness import flow_command, flow_files

FLOWS = flow_files()
LIBRARY = sorted(str(p) for p in (REPO / "steps").rglob("*.py") if "__pycache__" not in p.parts)
CONFIG_FILES = sorted(str(p) for p in (REPO / "config").glob("*.toml"))


@pytest.fixture(scope="module", params=FLOWS, ids=[f.stem for f in FLOWS])
def package_list(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    # Any working directory will do: the package is built from the flow file's location.
    result = flow_command(request.param, "package", "list", env={}, cwd=tmp_path_factory.mktemp("package"))
    assert result.returncode == 0, result.stderr
    return {line.strip() for line in (result.stdout + result.stderr).splitlines()}


def test_code_package_contains_the_steps_library(package_list: set[str]) -> None:
    assert set(LIBRARY) <= package_list


def test_code_package_contains_the_config_files(package_list: set[str]) -> None:
    assert set(CONFIG_FILES) <= package_list


@pytest.mark.parametrize("flow", FLOWS, ids=[f.stem for f in FLOWS])
def test_config_values_travel_inside_the_package(flow: Path, tmp_path: Path) -> None:
    """Remote tasks read Config values from the package, not from the (local) default path."""
    archive = tmp_path / "package.tgz"
    result = flow_command(flow, "package", "save", str(archive), env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with tarfile.open(archive) as tar:
        member = tar.extractfile(".mf_meta/CONFIG")
        assert member is not None
        configs = json.load(member)["user_configs"]
    default = REPO / "config" / f"{flow.stem}.toml"
    if default.exists():
        values, _ = configs["config"]
        assert values == tomllib.loads(default.read_text())
    assert all(values for values, _ in configs.values())
