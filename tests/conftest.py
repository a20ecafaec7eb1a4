"""Shared fixtures: loopback-only networking, a real S3 API server on 127.0.0.1 and sample data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from steps.demo.sample_data import generate
from tests.support.flows import LOOPBACK_ONLY, S3Server


@pytest.fixture(scope="session", autouse=True)
def loopback_only() -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(LOOPBACK_ONLY)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "METAFLOW_PROFILE"):
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def s3_server(loopback_only: None) -> Iterator[S3Server]:
    """moto in server mode on 127.0.0.1: a real S3 HTTP API, shared by the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["METAFLOW_S3_ENDPOINT_URL"] = endpoint
    yield S3Server(endpoint)
    os.environ.pop("METAFLOW_S3_ENDPOINT_URL", None)
    server.stop()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 good sample photos (8 per label) plus the bad and unusual files."""
    directory = tmp_path_factory.mktemp("sample")
    generate(directory, count=48, seed=1)
    return directory
