"""A DispatchFlow manifest row can ask for a TrainFlow gang (``nodes=K``): the seeds' grid shape of
K instances x N GPUs per region, one row per region."""

from __future__ import annotations

import pytest

from steps.dispatch.manifest import parse_manifest
from steps.errors import ConfigError
from tests.support.flows import REPO


def test_a_train_row_with_nodes_becomes_a_typed_gang_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "flows"))
    from dispatch_children import child_parameters, row_arguments

    parameters = child_parameters("train")
    rows = parse_manifest(
        "us-east-1,s3://images-us/raw,s3://images-us/trained,nodes=10,processes=8\n"
        "eu-west-1,s3://images-eu/raw,,nodes=10,processes=8\n"
    )
    assert [row_arguments("train", row, parameters) for row in rows] == [{"nodes": 10, "processes": 8}] * 2
    with pytest.raises(ConfigError, match="--manifest line 1 nodes '0'"):
        row_arguments("train", parse_manifest("us-east-1,s3://a/raw,,nodes=0")[0], parameters)
