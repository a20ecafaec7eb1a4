"""The notification document, Slack's shape, and a notifier that fails without raising."""

from __future__ import annotations

import socket

from steps.notify import document, is_slack, post, slack_text
from steps.run_outcome import RunOutcome, last_error_line
from tests.support.http_sink import http_sink

DONE = RunOutcome("PreprocessFlow", "PreprocessFlow/7", True, "Preprocessed 10 images", {"estimated_usd": 0.25})
FAILED = RunOutcome("InferFlow", "InferFlow/8", False, failed_step="start", error="ConfigError: --model 'x': ...")


def test_post_sends_the_document_once() -> None:
    with http_sink() as sink:
        assert post(sink.url, FAILED)
    assert sink.received == [
        {
            "flow": "InferFlow",
            "run": "InferFlow/8",
            "status": "failed",
            "headline": "",
            "summary": None,
            "estimated_usd": None,
            "failed_step": "start",
            "error": "ConfigError: --model 'x': ...",
        }
    ]
    assert document(DONE)["estimated_usd"] == 0.25


def test_slack_webhooks_get_slack_text() -> None:
    assert is_slack("https://hooks.slack.com/services/T/B/x")
    assert not is_slack("http://127.0.0.1:9/hooks.slack.com")
    assert slack_text(DONE) == ":white_check_mark: PreprocessFlow/7 succeeded (≈ $0.25): Preprocessed 10 images"
    assert slack_text(FAILED) == ":x: InferFlow/8 failed in step start: ConfigError: --model 'x': ..."


def test_a_failing_notifier_is_logged_not_raised(capsys) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}/hook"
    assert not post(dead, DONE, timeout_s=2)
    with http_sink(status=500) as sink:
        assert not post(sink.url, DONE)
    assert len(sink.received) == 1  # one attempt, no retries
    assert capsys.readouterr().out.count("the run's outcome is unchanged") == 2


def test_error_line_skips_metaflow_trailer() -> None:
    assert last_error_line("Traceback ...\nMemoryError: out\n\nTask failed.\n") == "MemoryError: out"
    assert last_error_line("") == "(no error output)"
