"""The C-parsed ListObjectsV2 reply is the dict botocore's own parser gives (timestamps as sent),
and an S3 client built by ``s3_client`` lists real (moto) buckets through it, odd keys included."""

from __future__ import annotations

import urllib.parse

import botocore.session
import pytest
from botocore.parsers import RestXMLParser

from steps.io.list_parser import parse_list_objects_v2
from steps.io.s3_storage import s3_client

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
KEYS = ["in/a b+c.jpg", "in/é/ü.png", "in/x&y<z>.jpg"]


def reply(*, truncated: bool, keys: list[str], prefixes: list[str], encoded: bool) -> bytes:
    def text(value: str) -> str:
        value = urllib.parse.quote(value, safe="/") if encoded else value
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    contents = "".join(
        f"<Contents><Key>{text(k)}</Key><LastModified>2024-01-0{i + 1}T00:00:00.000Z</LastModified>"
        f"<ETag>&quot;e{i}&quot;</ETag><Size>{i * 7}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        for i, k in enumerate(keys)
    )
    common = "".join(f"<CommonPrefixes><Prefix>{text(p)}</Prefix></CommonPrefixes>" for p in prefixes)
    token = "<NextContinuationToken>tok/en=</NextContinuationToken>" if truncated else ""
    encoding = "<EncodingType>url</EncodingType>" if encoded else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{NS}"><Name>b</Name><Prefix>in/</Prefix>'
        f"<KeyCount>{len(keys) + len(prefixes)}</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter>{encoding}"
        f"<IsTruncated>{str(truncated).lower()}</IsTruncated>{token}<StartAfter>in/0</StartAfter>"
        f"{contents}{common}</ListBucketResult>"
    ).encode()


@pytest.mark.parametrize(
    "case",
    [
        {"truncated": True, "keys": KEYS, "prefixes": ["in/d/"], "encoded": True},
        {"truncated": False, "keys": KEYS, "prefixes": [], "encoded": False},
        {"truncated": False, "keys": [], "prefixes": [], "encoded": False},
        {"truncated": False, "keys": [], "prefixes": ["in/p/", "in/q r/"], "encoded": True},
    ],
    ids=["truncated-encoded", "plain", "empty", "prefixes-only"],
)
def test_parsed_reply_matches_botocore(case: dict) -> None:
    shape = botocore.session.get_session().get_service_model("s3").operation_model("ListObjectsV2").output_shape
    body = reply(**case)
    expected = RestXMLParser(timestamp_parser=str)._do_parse({"body": body, "headers": {}, "status_code": 200}, shape)
    assert expected.pop("ResponseMetadata") == {}  # from the headers: none here
    assert parse_list_objects_v2(body) == expected


def test_clients_list_odd_keys_through_it(s3_server) -> None:
    bucket = s3_server.make_bucket("parsed")[len("s3://") :]
    client = s3_client()
    for key in KEYS:
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * len(key))
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="in/", PaginationConfig={"PageSize": 2}
    )
    listed = [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents", [])]
    assert listed == sorted((k, len(k)) for k in KEYS)  # url-decoded by botocore's handler, pages followed
    with pytest.raises(client.exceptions.NoSuchBucket):  # errors still parse as botocore's
        client.list_objects_v2(Bucket="no-such-bucket")
