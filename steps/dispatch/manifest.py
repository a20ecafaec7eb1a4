"""A dispatch manifest: one child run per row, in the reference array-file format.

    # region,input[,output][,name=value ...]
    us-east-1,s3://images-us/raw,s3://images-us/trained,epochs=90
    eu-west-1,s3://images-eu/raw,,epochs=90
    s3://images-ap/raw

The region column is optional (a first field that looks like an AWS region name, or ``local``);
without it (the last row) the region comes from where the input lives. An empty or missing output takes
``--output``'s template. Fields after that are ``name=value`` parameters of the child flow;
they are strings here and checked against the child flow's parameters in DispatchFlow's start.
Blank lines and lines starting with ``#`` are skipped (``#`` elsewhere may be part of a key).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from steps.errors import ConfigError

REGION = re.compile(r"^(local|[a-z]{2}(-gov)?-[a-z]+-\d+)$")


@dataclass(frozen=True)
class ManifestRow:
    line: int  # 1-based line in the manifest, for messages
    input: str
    region: str = ""  # "" = the input's region
    output: str = ""  # "" = --output's template
    parameters: tuple[tuple[str, str], ...] = field(default=())  # (name, value) in manifest order


def row_identity(flow: str, region: str, input_uri: str, output: str, parameters: dict[str, Any]) -> str:
    """A short stable digest of what a planned row asks for (output and region resolved, values
    typed): the same row in a rerun has the same one; any change makes it a new row."""
    ask = {"flow": flow, "region": region, "input": input_uri, "output": output, "parameters": parameters}
    return hashlib.sha256(json.dumps(ask, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_manifest(text: str, source: str = "--manifest") -> list[ManifestRow]:
    """The rows of ``text``; a malformed row is a ``ConfigError`` naming its line."""
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            rows.append(_parse_row(number, next(csv.reader(io.StringIO(line))), source))
    if not rows:
        raise ConfigError(source, text[:80], "at least one row region,input[,output][,name=value ...]", "add rows")
    return rows


def rows_from_inputs(inputs: str) -> list[ManifestRow]:
    """``--inputs a,b``: one row per location, region from the data, output from the template."""
    return [ManifestRow(line=n, input=uri.strip()) for n, uri in enumerate(inputs.split(","), 1) if uri.strip()]


def _parse_row(number: int, fields: list[str], source: str) -> ManifestRow:
    fields = [f.strip() for f in fields]
    where = f"{source} line {number}"
    region = fields.pop(0) if REGION.match(fields[0]) else ""
    locations = []
    while fields and "=" not in fields[0]:
        locations.append(fields.pop(0))
    if not locations or not locations[0] or len(locations) > 2:
        raise ConfigError(
            where, ",".join([region, *locations, *fields]), "region,input[,output][,name=value ...]", "fix that row"
        )
    parameters = []
    for item in fields:
        name, _, value = item.partition("=")
        if not name.strip() or "=" not in item:
            raise ConfigError(where, item, "name=value", "write per-row parameters as name=value, e.g. epochs=90")
        parameters.append((name.strip().replace("-", "_"), value.strip()))
    output = locations[1] if len(locations) == 2 else ""
    return ManifestRow(number, locations[0], region, output, tuple(parameters))


def load_manifest(uri: str) -> list[ManifestRow]:
    """Read and parse a manifest file or ``s3://bucket/key`` object (small: one row per job)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from steps.io.storage import open_storage

    directory, _, name = uri.rstrip("/").rpartition("/")
    try:
        text = open_storage(directory or ".").read(name).decode()
    except (OSError, BotoCoreError, ClientError, UnicodeDecodeError) as error:
        raise ConfigError(
            "--manifest", uri, "a readable text file or s3:// object", f"check the location ({error})"
        ) from None
    return parse_manifest(text, f"--manifest {uri}")
