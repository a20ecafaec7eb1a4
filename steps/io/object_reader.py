"""Whole-object S3 GETs that do not hold the GIL: one object per image at thousands of images/s.

botocore spends ~3 ms of client CPU per GET, nearly all of it Python holding the GIL (signing,
headers, parsing), which caps a task process at a few hundred objects/s however many threads
read. obstore (Rust; ``bench/object_readers.py`` measured it against botocore, awscrt and
s3torchconnector) does the same GET for ~0.3 ms of CPU, outside the GIL, so reads scale with
threads. botocore keeps everything else (listing, writes, small control objects): there its
CPU per call does not matter.

The reader goes where the botocore client goes: the same endpoint (``METAFLOW_S3_ENDPOINT_URL``,
path-style, plain http allowed for it), the same region, and the credentials botocore resolves,
handed to obstore through a callback, so obstore runs no credential chain of its own and never
asks an instance-metadata address. Missing and forbidden objects raise botocore's ``ClientError``
with S3's codes, so ``read_input`` reports them as rejects exactly as before. Without obstore
installed, ``object_reader`` returns None and the caller reads with botocore, said once.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

# How long obstore may reuse one resolution of the credentials before asking botocore again;
# botocore refreshes temporary credentials well before they expire.
_CREDENTIALS_TTL = timedelta(minutes=10)


def _client_error(code: str, message: str) -> Exception:
    """botocore's ``ClientError`` for an S3 error code, as ``get_object`` raises it."""
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, "GetObject")


class ObjectReader:
    """``read(key)``: the bytes of ``s3://bucket/key``, fetched by obstore with the GIL released.

    The store is made on the first read (it may ask the bucket's region), not when storage opens.
    """

    def __init__(self, make_store: Callable[[], object], get: Callable, errors: object) -> None:
        self._make_store = make_store
        self._store: object | None = None
        self._lock = threading.Lock()
        self._get = get
        self._errors = errors

    def _opened(self) -> object:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._make_store()
        return self._store

    def read(self, key: str) -> bytes:
        return bytes(self._body(key))

    def read_view(self, key: str) -> memoryview:
        """The body as obstore received it, lent: no copy into a Python ``bytes``."""
        return memoryview(self._body(key))

    def _body(self, key: str) -> object:
        try:
            return self._get(self._opened(), key).bytes()
        except (FileNotFoundError, self._errors.NotFoundError) as err:  # obstore raises the builtin
            raise _client_error("NoSuchKey", str(err).splitlines()[0]) from err
        except (PermissionError, self._errors.PermissionDeniedError) as err:
            raise _client_error("AccessDenied", str(err).splitlines()[0]) from err


class _BotocoreCredentials:
    """obstore's credential callback: whatever botocore resolved (env, profile, container role)."""

    def __init__(self, credentials: object) -> None:
        self._credentials = credentials

    def __call__(self) -> dict:
        frozen = self._credentials.get_frozen_credentials()
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": datetime.now(UTC) + _CREDENTIALS_TTL,
        }


@functools.cache
def _say_botocore_reads(reason: str) -> None:
    print(
        f"spot-batch: S3 objects are read with botocore ({reason}): ~3 ms of GIL-held CPU per object caps "
        "a task near 300 objects/s. pip install obstore for ~10x fewer CPU per object, outside the GIL.",
        file=sys.stderr,
        flush=True,
    )


def object_reader(bucket: str, client: object, max_connections: int) -> ObjectReader | None:
    """A GIL-free reader for ``bucket`` configured like ``client`` (a boto3 S3 client), or None."""
    try:
        import obstore
        import obstore.exceptions
        from obstore.store import S3Store
    except ImportError:
        _say_botocore_reads("obstore is not installed")
        return None
    from botocore.session import get_session

    endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or None

    def make_store() -> S3Store:
        # botocore follows a bucket's region redirect by itself; obstore does not, so ask AWS once.
        region = (None if endpoint else _bucket_region(client, bucket)) or client.meta.region_name or "us-east-1"
        config: dict = {"region": region, "virtual_hosted_style_request": False}
        if endpoint:
            config["endpoint"] = endpoint
        credentials = get_session().get_credentials()
        if credentials is None:
            config["skip_signature"] = True  # anonymous, as botocore would be: public buckets only
        return S3Store(
            bucket,
            config=config,
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "pool_max_idle_per_host": str(max_connections),
                "connect_timeout": timedelta(seconds=10),
                "timeout": timedelta(seconds=60),
            },
            retry_config={"max_retries": 8, "retry_timeout": timedelta(minutes=3)},
            credential_provider=None if credentials is None else _BotocoreCredentials(credentials),
        )

    return ObjectReader(make_store, obstore.get, obstore.exceptions)


def _bucket_region(client: object, bucket: str) -> str | None:
    """The region S3 names in the ``x-amz-bucket-region`` header of any HeadBucket answer, a denied one too."""
    from botocore.exceptions import ClientError

    try:
        response = client.head_bucket(Bucket=bucket)
    except ClientError as err:
        response = err.response
    return response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
