import os
import signal
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from steps.errors import ConfigError, SpotInterruption
from steps.spot import InterruptionWatcher, is_transient, metadata_url, watch_interruptions
from tests.support.fakes import fake_imds


def test_no_metadata_traffic_on_a_laptop(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPOT_BATCH_METADATA_URL", "AWS_BATCH_JOB_ID", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert metadata_url() is None
    monkeypatch.setenv("AWS_BATCH_JOB_ID", "job-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    assert metadata_url() == "http://169.254.169.254"
    monkeypatch.setenv("SPOT_BATCH_METADATA_URL", "http://127.0.0.1:9/")
    assert metadata_url() == "http://127.0.0.1:9"


def test_unreachable_metadata_service_turns_the_watcher_off_quickly() -> None:
    watcher = InterruptionWatcher("http://127.0.0.1:1", interval_s=0.05, timeout_s=0.5)
    started = time.monotonic()
    watcher.start()
    watcher.close()
    assert time.monotonic() - started < 2
    assert not watcher.stop.is_set()


def test_instance_action_sets_stop() -> None:
    with fake_imds(notice_after_s=0.2) as url:
        watcher = InterruptionWatcher(url, interval_s=0.05)
        watcher.start()
        assert watcher.stop.wait(5)
        watcher.close()
    assert "spot interruption notice" in watcher.reason and "terminate" in watcher.reason


def test_sigterm_sets_stop_and_handler_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOT_BATCH_METADATA_URL", raising=False)
    before = signal.getsignal(signal.SIGTERM)
    with watch_interruptions() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2)
    assert signal.getsignal(signal.SIGTERM) == before


def aws_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}}, "GetObject")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (SpotInterruption("notice"), True),
        (aws_error("SlowDown"), True),
        (aws_error("503"), True),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ConnectionResetError(), True),
        (aws_error("AccessDenied"), False),
        (ConfigError("--size", 0, "positive", "fix it"), False),
        (KeyError("bug"), False),
        (TypeError("bug"), False),
    ],
)
def test_retry_policy(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_a_bug_wrapping_a_transient_cause_is_transient() -> None:
    try:
        try:
            raise aws_error("InternalError")
        except ClientError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
