"""Manifest rows: the reference array-file format with optional region, output and parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.dispatch.manifest import ManifestRow, load_manifest, parse_manifest, row_identity, rows_from_inputs
from steps.errors import ConfigError

MANIFEST = """\
# region,input[,output][,name=value ...]
us-east-1,s3://images-us/raw,s3://images-us/trained,epochs=90,batch-size=32

eu-west-1,s3://images-eu/raw,,epochs=90
s3://images-ap/raw
local,/data/raw#2,/data/out
"""


def test_rows_with_and_without_region_output_and_parameters() -> None:
    assert parse_manifest(MANIFEST) == [
        ManifestRow(
            2, "s3://images-us/raw", "us-east-1", "s3://images-us/trained", (("epochs", "90"), ("batch_size", "32"))
        ),
        ManifestRow(4, "s3://images-eu/raw", "eu-west-1", "", (("epochs", "90"),)),
        ManifestRow(5, "s3://images-ap/raw"),
        ManifestRow(6, "/data/raw#2", "local", "/data/out"),
    ]


def test_identity_is_stable_and_changes_with_what_the_row_asks() -> None:
    first = row_identity("train", "us-east-1", "s3://a/x", "s3://a/y", {"epochs": 90, "seed": 1})
    assert first == row_identity("train", "us-east-1", "s3://a/x", "s3://a/y", {"seed": 1, "epochs": 90})
    assert (
        len(
            {
                first,
                row_identity("infer", "us-east-1", "s3://a/x", "s3://a/y", {"epochs": 90, "seed": 1}),
                row_identity("train", "eu-west-1", "s3://a/x", "s3://a/y", {"epochs": 90, "seed": 1}),
                row_identity("train", "us-east-1", "s3://a/x", "s3://a/z", {"epochs": 90, "seed": 1}),
                row_identity("train", "us-east-1", "s3://a/x", "s3://a/y", {"epochs": 91, "seed": 1}),
            }
        )
        == 5
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one row"),
        ("# only a comment\n", "at least one row"),
        ("us-east-1\n", "line 1"),
        ("us-east-1,s3://a/x,s3://a/y,s3://a/z\n", "line 1"),
        ("s3://a/x,s3://a/y,epochs\n", "line 1"),
        ("s3://a/x,=3\n", "name=value"),
    ],
)
def test_malformed_rows_are_one_line_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse_manifest(text)
    assert "\n" not in str(raised.value)


def test_inputs_become_rows_and_files_load(tmp_path: Path) -> None:
    assert rows_from_inputs("s3://a/x, s3://b/y,") == [ManifestRow(1, "s3://a/x"), ManifestRow(2, "s3://b/y")]
    (tmp_path / "jobs.csv").write_text(MANIFEST)
    assert len(load_manifest(str(tmp_path / "jobs.csv"))) == 4
    with pytest.raises(ConfigError, match="readable"):
        load_manifest(str(tmp_path / "missing.csv"))
