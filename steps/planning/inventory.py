"""Input keys from a list instead of a listing: an S3 Inventory report or a plain key list.

At 10^8 objects even a parallel LIST takes many minutes; S3 Inventory writes the same list daily
for a fraction of a cent per million objects. ``--manifest URI`` (local or s3://) accepts:

- an S3 Inventory ``manifest.json`` (``fileFormat`` CSV or Parquet): its data files are read one
  at a time from the destination bucket (a local copy: next to manifest.json or in ``../data/``),
  MD5-checked; CSV files are gzipped, without a header, columns from ``fileSchema``, keys
  URL-encoded (``+`` is a space). Keys are bucket-absolute: those under the ``--input`` prefix
  are kept, relative to it; delete markers and non-current versions are skipped;
- a key list: Parquet or CSV (with a header) with a ``key`` column and an optional ``size``, or
  text with one key a line. Keys are relative to ``--input`` (or its full URI, which is stripped).

Objects named but gone are rejected when read, like any unreadable object. Sizes a key list
does not give count as 0 (they only steer the region choice).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import urllib.parse
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from steps.errors import ConfigError
from steps.io.listing import PAGE, ObjectInfo
from steps.io.s3_storage import S3Storage
from steps.io.storage import Storage, is_s3, open_storage
from steps.output.layout import METADATA_NAMES

_ARN = "arn:aws:s3:::"


def _read(uri: str) -> bytes:
    from botocore.exceptions import ClientError

    directory, _, name = uri.rpartition("/")
    try:
        return open_storage(directory or ".").read(name)
    except (OSError, ClientError) as err:
        raise ConfigError("--manifest", uri, "a readable manifest or key list", f"check the path ({err})") from err


def _pages(objects: Iterable[ObjectInfo]) -> Iterator[list[ObjectInfo]]:
    page: list[ObjectInfo] = []
    for obj in objects:
        if obj.key and obj.key not in METADATA_NAMES:
            page.append(obj)
        if len(page) >= PAGE:
            yield page
            page = []
    if page:
        yield page


def _parquet_rows(data: bytes, key: str, size: str | None) -> Iterator[dict]:
    parquet = pq.ParquetFile(pa.BufferReader(data))
    names = set(parquet.schema_arrow.names)
    columns = [c for c in (key, size, "is_latest", "is_delete_marker") if c and c in names]
    for batch in parquet.iter_batches(columns=columns, use_threads=False):
        yield from batch.to_pylist()


def manifest_pages(uri: str, source: Storage) -> Iterator[list[ObjectInfo]]:
    """The input objects named by the manifest or key list at ``uri``, in pages."""
    data = _read(uri)
    if uri.endswith(".json"):
        return _pages(_inventory_objects(uri, json.loads(data), source))
    return _pages(_key_list_objects(uri, data, source))


def _relative(key: str, source: Storage) -> str:
    return key.removeprefix(source.uri.rstrip("/") + "/")


def _key_list_objects(uri: str, data: bytes, source: Storage) -> Iterator[ObjectInfo]:
    if uri.endswith(".parquet"):
        if "key" not in pq.ParquetFile(pa.BufferReader(data)).schema_arrow.names:
            raise ConfigError("--manifest", uri, "a Parquet key list with a `key` column", "add or rename the column")
        rows: Iterable[dict] = _parquet_rows(data, "key", "size")
    elif uri.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(data.decode()))
        if "key" not in (reader.fieldnames or []):
            raise ConfigError("--manifest", uri, "a CSV key list with a `key` header", "add a first line `key,size`")
        rows = reader
    else:
        rows = ({"key": line} for line in data.decode().splitlines())
    for row in rows:
        yield ObjectInfo(_relative(row["key"], source), int(row.get("size") or 0))


def _inventory_objects(uri: str, manifest: dict, source: Storage) -> Iterator[ObjectInfo]:
    fmt = manifest.get("fileFormat")
    if fmt not in ("CSV", "Parquet"):
        raise ConfigError("S3 Inventory fileFormat", fmt, "CSV or Parquet", "configure the inventory as CSV or Parquet")
    if not isinstance(source, S3Storage) or manifest.get("sourceBucket") != source.bucket:
        raise ConfigError(
            "--manifest",
            uri,
            f"an S3 Inventory of the --input bucket ({getattr(source, 'bucket', source.uri)})",
            f"it lists bucket {manifest.get('sourceBucket')!r}; pass that bucket's --input or its inventory",
        )
    columns = re.split(r",\s*", manifest["fileSchema"]) if fmt == "CSV" else []
    for entry in manifest["files"]:
        data = _inventory_file(uri, manifest, entry["key"])
        if hashlib.md5(data).hexdigest() != entry.get("MD5checksum", hashlib.md5(data).hexdigest()):
            raise ConfigError("S3 Inventory file", entry["key"], "its MD5checksum", "the report is damaged: rerun it")
        if fmt == "CSV":
            text = io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(data)), "utf-8")
            rows: Iterable[dict] = (
                {"key": urllib.parse.unquote_plus(r["Key"]), "size": r.get("Size"), **_version_fields(r)}
                for r in (dict(zip(columns, line, strict=False)) for line in csv.reader(text))
            )
        else:
            rows = _parquet_rows(data, "key", "size")
        for row in rows:
            current = str(row.get("is_latest", True)).lower() != "false"
            marker = str(row.get("is_delete_marker", False)).lower() == "true"
            if current and not marker and row["key"].startswith(source.prefix):
                yield ObjectInfo(row["key"][len(source.prefix) :], int(row.get("size") or 0))


def _version_fields(row: dict) -> dict:
    """CSV ``IsLatest``/``IsDeleteMarker`` under the Parquet names, where the schema has them."""
    names = (("IsLatest", "is_latest"), ("IsDeleteMarker", "is_delete_marker"))
    return {snake: row[name] for name, snake in names if name in row}


def _inventory_file(uri: str, manifest: dict, key: str) -> bytes:
    if is_s3(uri):
        return _read(f"s3://{manifest['destinationBucket'].removeprefix(_ARN)}/{key}")
    here = os.path.dirname(os.path.abspath(uri))
    name = os.path.basename(key)
    for candidate in (os.path.join(here, name), os.path.join(os.path.dirname(here), "data", name)):
        if os.path.isfile(candidate):
            return _read(candidate)
    raise ConfigError("S3 Inventory file", key, f"a local copy next to {uri} or in ../data/", "copy the data files too")
