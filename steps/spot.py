"""Spot interruptions and the retry policy.

``InterruptionWatcher`` polls the EC2 instance metadata service (IMDSv2) for a spot
instance-action (the two-minute notice) and listens for SIGTERM (what AWS Batch and Kubernetes
send before killing a container). Either sets ``stop``; the chunk loop commits the chunk in
flight, then raises ``SpotInterruption`` so the task exits non-zero and ``@retry`` reschedules it.

The watcher runs only where an interruption can happen: on AWS Batch or Kubernetes, or when
``SPOT_BATCH_METADATA_URL`` is set explicitly (tests point it at a fake server on 127.0.0.1). A
laptop run never sends a packet to the link-local metadata address.

``is_transient`` is the retry policy: spot loss, S3 throttling/5xx and broken connections are
worth another attempt; configuration errors and bugs are not.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from steps.errors import ConfigError, LeaseConflict, SpotInterruption, UserCodeError
from steps.progress import log

DEFAULT_METADATA_URL = "http://169.254.169.254"
METADATA_URL_ENV = "SPOT_BATCH_METADATA_URL"
POLL_SECONDS_ENV = "SPOT_BATCH_POLL_SECONDS"
INSTANCE_ACTION = "/latest/meta-data/spot/instance-action"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"
TOKEN = "/latest/api/token"

# Error codes S3/botocore use for throttling and server-side trouble.
_TRANSIENT_AWS_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "502",
        "504",
    }
)


def on_cloud() -> bool:
    """Whether this process runs on AWS Batch or Kubernetes (where instances bill task time)."""
    return "AWS_BATCH_JOB_ID" in os.environ or "KUBERNETES_SERVICE_HOST" in os.environ


def metadata_url() -> str | None:
    """Where to poll, or None where no spot interruption can reach this process."""
    explicit = os.environ.get(METADATA_URL_ENV)
    if explicit:
        return explicit.rstrip("/")
    disabled = os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"
    return DEFAULT_METADATA_URL if on_cloud() and not disabled else None


class InterruptionWatcher:
    """Background poller of the spot notice; ``stop`` is set when the instance is going away."""

    def __init__(self, base_url: str | None, interval_s: float = 5.0, timeout_s: float = 1.0) -> None:
        self.base_url = base_url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stop = threading.Event()
        self.reason = ""
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        # Never route metadata requests through a proxy: it is a link-local service.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(f"{self.base_url}{path}", method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, ""

    def _token(self) -> str:
        status, token = self._request("PUT", TOKEN, {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        if status != 200:
            raise OSError(f"metadata token request answered {status}")
        return token

    def _poll(self) -> None:
        try:
            token = self._token()
        except OSError as err:
            # Not on EC2, or IMDS unreachable (e.g. hop limit 1 from a container): one line, one try.
            log(f"spot watcher off: no instance metadata at {self.base_url} ({err}); SIGTERM is still handled")
            return
        log(f"spot watcher on: polling {self.base_url} every {self.interval_s:g} s")
        rebalance_seen = False
        while not self._closed.is_set():
            try:
                headers = {"X-aws-ec2-metadata-token": token}
                status, body = self._request("GET", INSTANCE_ACTION, headers)
                if status == 200:
                    self.notify(f"spot interruption notice: {json.loads(body or '{}')}")
                    return
                if status == 401:
                    token = self._token()
                elif not rebalance_seen and self._request("GET", REBALANCE, headers)[0] == 200:
                    rebalance_seen = True
                    log("EC2 rebalance recommendation: this instance is at elevated risk of interruption")
            except (OSError, ValueError) as err:
                log(f"spot watcher: metadata poll failed ({err}); will try again")
            self._closed.wait(self.interval_s)

    def notify(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            log(f"{reason}: finishing the chunk in flight, then exiting so the task is retried")
            self.stop.set()

    def start(self) -> None:
        if self.base_url:
            self._thread = threading.Thread(target=self._poll, name="spot-watcher", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread:
            self._thread.join(timeout=self.timeout_s + 1)


@contextmanager
def watch_interruptions() -> Iterator[threading.Event]:
    """Yield an event that is set on a spot notice or SIGTERM, for the duration of a task."""
    watcher = InterruptionWatcher(metadata_url(), float(os.environ.get(POLL_SECONDS_ENV, "5")))

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        watcher.notify("SIGTERM received")

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main_thread else None
    watcher.start()
    try:
        yield watcher.stop
    finally:
        watcher.close()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def is_transient(error: BaseException) -> bool:
    """Whether another attempt of the task could succeed where this one failed."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(error, SpotInterruption | ConnectionError | HTTPClientError | TimeoutError | ConnectionResetError):
        return True
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code", "") in _TRANSIENT_AWS_CODES
    if isinstance(error, ConfigError | LeaseConflict | UserCodeError):  # a user's bug, even if it raised a TimeoutError
        return False
    cause = error.__cause__ or error.__context__
    return cause is not None and is_transient(cause)
