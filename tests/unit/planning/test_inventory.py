"""``--manifest``: S3 Inventory reports (CSV and Parquet) and plain key lists name the input keys
instead of a listing; the plan they give is the plan the listing would give."""

import csv
import gzip
import hashlib
import io
import json
import urllib.parse
from pathlib import Path

import pyarrow as pa
import pytest

from steps.errors import ConfigError
from steps.io.local_storage import LocalStorage
from steps.io.parquet import table_to_parquet
from steps.io.storage import open_storage
from steps.planning.run_plan import prepare_run
from steps.planning.store import read_shard_keys

KEYS = [hashlib.sha256(str(i).encode()).hexdigest() + ".jpg" for i in range(60)] + ["with space+plus.jpg"]


def planned_keys(output: Path, run) -> list[str]:
    storage = LocalStorage(output)
    return sorted(k for ref in run.shards for k in read_shard_keys(storage, ref.name))


def plan(source: str, output: Path, manifest: str):
    return prepare_run(source, str(output), shard_size=20, max_shards=100, prefix_width=0, threads=4, manifest=manifest)


def inventory_rows(bucket: str) -> list[dict]:
    """Current objects under in/, plus what an inventory also holds and the plan must skip."""
    rows = [{"bucket": bucket, "key": f"in/{k}", "size": 3, "is_latest": True, "is_delete_marker": False} for k in KEYS]
    rows += [
        {"bucket": bucket, "key": "in/deleted.jpg", "size": 0, "is_latest": True, "is_delete_marker": True},
        {"bucket": bucket, "key": "in/old-version.jpg", "size": 3, "is_latest": False, "is_delete_marker": False},
        {"bucket": bucket, "key": "elsewhere/x.jpg", "size": 3, "is_latest": True, "is_delete_marker": False},
        {"bucket": bucket, "key": "in/labels.csv", "size": 9, "is_latest": True, "is_delete_marker": False},
    ]
    return rows


def csv_gz(rows: list[dict]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL)  # S3 Inventory CSV: no header, URL-encoded keys
    for r in rows:
        writer.writerow(
            [
                r["bucket"],
                urllib.parse.quote_plus(r["key"], safe="/"),
                str(r["is_latest"]).lower(),
                str(r["is_delete_marker"]).lower(),
                r["size"],
            ]
        )
    return gzip.compress(text.getvalue().encode())


def manifest_json(source_bucket: str, dest_bucket: str, fmt: str, files: dict[str, bytes]) -> bytes:
    schema = "Bucket, Key, IsLatest, IsDeleteMarker, Size" if fmt == "CSV" else "message s3.inventory { ... }"
    return json.dumps(
        {
            "sourceBucket": source_bucket,
            "destinationBucket": f"arn:aws:s3:::{dest_bucket}",
            "version": "2016-11-30",
            "creationTimestamp": "1704067200000",
            "fileFormat": fmt,
            "fileSchema": schema,
            "files": [{"key": k, "size": len(v), "MD5checksum": hashlib.md5(v).hexdigest()} for k, v in files.items()],
        }
    ).encode()


def test_s3_inventory_csv_on_s3_names_the_current_objects_under_the_input(s3_server, tmp_path: Path) -> None:
    src, dest = s3_server.make_bucket("inv-source-csv")[5:], s3_server.make_bucket("inv-dest-csv")[5:]
    rows = inventory_rows(src)
    files = {f"inv/{src}/cfg/data/part-{i}.csv.gz": csv_gz(rows[i::2]) for i in range(2)}
    client = s3_server.client()
    for key, body in files.items():
        client.put_object(Bucket=dest, Key=key, Body=body)
    manifest = f"inv/{src}/cfg/2024-01-01T00-00Z/manifest.json"
    client.put_object(Bucket=dest, Key=manifest, Body=manifest_json(src, dest, "CSV", files))
    run = plan(f"s3://{src}/in", tmp_path / "out", f"s3://{dest}/{manifest}")
    assert planned_keys(tmp_path / "out", run) == sorted(KEYS)
    assert run.input_bytes == 3 * len(KEYS) and len(run.shards) == 4  # 61 keys at --shard-size 20


def test_s3_inventory_parquet_local_copy(s3_server, tmp_path: Path) -> None:
    src = s3_server.make_bucket("inv-source-parquet")[5:]
    data = table_to_parquet(pa.Table.from_pylist(inventory_rows(src)))
    (tmp_path / "cfg" / "data").mkdir(parents=True)
    (tmp_path / "cfg" / "data" / "0001.parquet").write_bytes(data)
    stamp = tmp_path / "cfg" / "2024-01-01T00-00Z"
    stamp.mkdir()
    files = {f"inv/{src}/cfg/data/0001.parquet": data}
    (stamp / "manifest.json").write_bytes(manifest_json(src, "inv-dest", "Parquet", files))
    run = plan(f"s3://{src}/in", tmp_path / "out", str(stamp / "manifest.json"))
    assert planned_keys(tmp_path / "out", run) == sorted(KEYS)


def test_an_inventory_of_another_bucket_is_a_config_error(s3_server, tmp_path: Path) -> None:
    src = s3_server.make_bucket("inv-source-other")[5:]
    (tmp_path / "manifest.json").write_bytes(manifest_json("someone-else", "d", "CSV", {}))
    with pytest.raises(ConfigError, match="an S3 Inventory of the --input bucket"):
        plan(f"s3://{src}/in", tmp_path / "out", str(tmp_path / "manifest.json"))


@pytest.mark.parametrize("kind", ["txt", "csv", "parquet"])
def test_a_plain_key_list_names_the_keys(tmp_path: Path, kind: str) -> None:
    source = tmp_path / "in"
    source.mkdir()
    listed = [*KEYS, f"{source}/absolute.jpg"]  # a full URI under --input is made relative
    path = tmp_path / f"keys.{kind}"
    if kind == "txt":
        path.write_text("\n".join(listed) + "\n")
    elif kind == "csv":
        path.write_text("key,size\n" + "".join(f'"{k}",5\n' for k in listed))
    else:
        path.write_bytes(table_to_parquet(pa.table({"key": listed, "size": [5] * len(listed)})))
    run = plan(str(source), tmp_path / "out", str(path))
    assert planned_keys(tmp_path / "out", run) == sorted([*KEYS, "absolute.jpg"])
    assert run.input_bytes == (0 if kind == "txt" else 5 * len(listed))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "expected a readable manifest or key list"),
        ("keys.csv", "name\nx.jpg\n", "expected a CSV key list with a `key` header"),
        ("empty.txt", "", "--manifest .*expected at least one object"),
    ],
)
def test_bad_key_lists_are_one_line_config_errors(tmp_path: Path, name: str, content, message: str) -> None:
    (tmp_path / "in").mkdir()
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=message):
        plan(str(tmp_path / "in"), tmp_path / "out", str(tmp_path / name))


def test_open_storage_reads_key_lists_from_s3(s3_server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("keylist-bucket")
    open_storage(bucket).write("lists/keys.txt", "\n".join(KEYS).encode())
    (tmp_path / "in").mkdir()
    run = plan(str(tmp_path / "in"), tmp_path / "out", f"{bucket}/lists/keys.txt")
    assert planned_keys(tmp_path / "out", run) == sorted(KEYS)
