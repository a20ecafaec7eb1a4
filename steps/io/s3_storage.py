"""Storage on an s3:// prefix: boto3 for listing and control objects, obstore for object reads
(``steps.io.object_reader``), and conditional writes as ``If-None-Match: *`` / ``If-Match: <ETag>``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from steps.errors import ConfigError
from steps.io.listing import ObjectInfo, s3_pages
from steps.io.object_reader import object_reader


def s3_client(max_connections: int = 16, fail_fast: bool = False):
    """A boto3 S3 client for the configured endpoint, retrying throttling and 5xx with backoff.

    ``fail_fast`` is for optional lookups (e.g. a bucket's region) that must never stall a run.
    """
    import boto3
    import botocore.session
    from botocore.config import Config

    from steps.io.list_parser import FastListParserFactory

    if fail_fast:
        config = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 2, "mode": "standard"})
    else:
        config = Config(
            retries={"max_attempts": 8, "mode": "adaptive"},
            max_pool_connections=max_connections,
            connect_timeout=10,
            read_timeout=60,
        )
    endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or None
    session = botocore.session.get_session()
    session.register_component("response_parser_factory", FastListParserFactory())  # listing's CPU floor
    return boto3.session.Session(botocore_session=session).client("s3", endpoint_url=endpoint, config=config)


class S3Storage:
    def __init__(self, uri: str, max_connections: int = 16) -> None:
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError("S3 URI", uri, "s3://bucket[/prefix]", "add a bucket name")
        self.uri = uri.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.threads = max_connections  # key ranges listed at once
        self._client = s3_client(max_connections)
        self._reader = object_reader(bucket, self._client, max_connections)  # None: botocore reads

    def __getstate__(self) -> dict:
        """Pickled as its URI and pool size (for worker processes): clients are made anew there."""
        return {"uri": self.uri, "max_connections": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"], state["max_connections"])

    def _key(self, key: str) -> str:
        return self.prefix + key

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return sorted((o for page in self.pages(prefix) for o in page), key=lambda o: o.key)

    def pages(self, prefix: str = "") -> Iterator[list[ObjectInfo]]:
        return s3_pages(self._client, self.bucket, self.prefix, prefix, self.threads)

    def read(self, key: str) -> bytes:
        if self._reader is not None:
            return self._reader.read(self._key(key))
        return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def read_view(self, key: str) -> memoryview:
        if self._reader is not None:
            return self._reader.read_view(self._key(key))
        return memoryview(self.read(key))

    def write(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def _conditional(self, call: Callable[..., object], key: str, **condition: object) -> bool:
        from botocore.exceptions import ClientError

        try:
            call(Bucket=self.bucket, Key=self._key(key), **condition)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 412: the condition failed; 409: a concurrent conditional write won; 404: gone meanwhile.
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (404, 409, 412):
                return False
            raise
        return True

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist (``If-None-Match: *``)."""
        return self._conditional(self._client.put_object, key, Body=data, IfNoneMatch="*")

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def replace(self, key: str, data: bytes, version: str) -> bool:
        """Overwrite ``key`` only if its ETag is still ``version`` (``If-Match``)."""
        return self._conditional(self._client.put_object, key, Body=data, IfMatch=version)

    def delete_version(self, key: str, version: str) -> bool:
        """Delete ``key`` only if its ETag is still ``version`` (``If-Match``)."""
        return self._conditional(self._client.delete_object, key, IfMatch=version)

    def check_bucket(self) -> None:
        """Raise ConfigError when the bucket is missing or unreachable with these credentials."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as err:
            raise ConfigError(
                "bucket",
                self.bucket,
                "an existing S3 bucket readable with the current AWS credentials",
                f"create it or fix the name/credentials/endpoint ({err})",
            ) from err
