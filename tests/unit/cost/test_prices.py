"""Where prices come from: live EC2 spot prices (moto's EC2 API on 127.0.0.1), the dated snapshot
when AWS cannot answer, and an output that always says which one and how old."""

from __future__ import annotations

import json
import time
from datetime import date

import pytest

from steps.cli import main
from steps.cost.prices import ENDPOINT_ENV, load_prices, parse_snapshot, read_snapshot
from tests.support.flows import S3Server

TODAY = date(2026, 11, 23)
MOTO_SPOT_PRICE = 0.00001  # what moto answers for every zone


def test_snapshot_holds_the_reference_table() -> None:
    book = parse_snapshot(read_snapshot())
    assert book.regions == ["ap-northeast-1", "eu-west-1", "us-east-1", "us-east-2", "us-west-2"]
    gpu_types = [t for t in book.instance_types if t.startswith("g")]
    assert gpu_types == ["g4dn.xlarge", "g5.xlarge", "g6.xlarge"]
    cpu_families = {t.split(".")[0] for t in book.instance_types} - {"g4dn", "g5", "g6"}
    assert cpu_families == {"c6i", "c7i", "c7a", "m7i", "c7g"} and len(book.instance_types) == 3 + 15
    assert len(book.quotes) == 14 + 15 * 5  # g6.xlarge is not offered in eu-west-1
    assert all(q.gpus == 0 and q.shape.vcpus in (4, 8, 16) for q in book.quotes if q.instance_type[0] in "cm")
    assert "CPU types: estimated" in read_snapshot()["source"]
    assert {q.band for q in book.quotes} <= set(book.band_rates)
    assert book.cross_region_per_gb == 0.02
    assert book.describe(TODAY) == (
        "prices: snapshot config/prices.toml dated 2026-11-01 (22 days old); interruption bands are assumed"
    )


def test_live_spot_prices_from_the_ec2_api(s3_server: S3Server) -> None:
    book = load_prices(read_snapshot(), endpoint_url=s3_server.endpoint, keep=lambda q: q.gpus > 0)
    assert book.live_at is not None
    assert {q.spot for q in book.quotes} == {MOTO_SPOT_PRICE}
    snapshot_gpu = {q.on_demand for q in parse_snapshot(read_snapshot()).quotes if q.gpus}
    assert {q.on_demand for q in book.quotes} == snapshot_gpu
    assert book.describe(TODAY).startswith("prices: live EC2 spot price history fetched ")
    assert "on-demand prices and interruption bands from the snapshot config/prices.toml dated 2026-11-01" in (
        book.describe(TODAY)
    )


def test_live_endpoint_from_the_environment(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENDPOINT_ENV, s3_server.endpoint)
    assert load_prices(read_snapshot(), keep=lambda q: q.instance_type == "g5.xlarge").live_at is not None


def test_dead_endpoint_falls_back_to_the_snapshot_quickly() -> None:
    started = time.monotonic()
    book = load_prices(read_snapshot(), endpoint_url="http://127.0.0.1:1")
    # Refused at once; the bound only has to rule out the client's 60 s timeouts and backoff (and
    # allow for a boto3 import on a loaded machine).
    assert time.monotonic() - started < 20
    assert book.live_at is None
    assert book.quotes == parse_snapshot(read_snapshot()).quotes
    assert "(live lookup failed: Could not connect to the endpoint URL" in book.describe(TODAY)


def test_no_credentials_means_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    book = load_prices(read_snapshot(), endpoint_url="http://127.0.0.1:1")
    assert book.fallback_reason == "no AWS credentials for live prices"


def test_cli_json_with_live_prices(s3_server: S3Server, capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "regions",
            "rank",
            "--instance-types",
            "g4dn.xlarge",
            "--data-region",
            "us-west-2",
            "--data-gb",
            "5",
            "--task-hours",
            "1",
            "--endpoint-url",
            s3_server.endpoint,
            "--json",
        ]
    )
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert rows[0]["region"] == "us-west-2"  # equal live prices everywhere: staying avoids the egress
    assert {r["spot_price"] for r in rows} == {MOTO_SPOT_PRICE}
    assert "prices: live EC2 spot price history" in out.err


def test_no_credentials_off_cloud_never_asks_the_metadata_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a laptop botocore's credential chain would end at the instance metadata address."""
    import http.server

    from tests.support.fakes import serve

    asked: list[str] = []

    class RecordingImds(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_PUT(self) -> None:
            asked.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_GET = do_PUT

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "SPOT_BATCH_METADATA_URL", "AWS_BATCH_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    with serve(RecordingImds) as imds:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
        book = load_prices(read_snapshot(), live=True)
    assert asked == []
    assert "no AWS credentials" in book.fallback_reason
