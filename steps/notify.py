"""Tell someone a run ended: an HTTP POST of a small JSON document, once, either way.

``notify_run_end`` is the flows' Metaflow exit hook (flows/notifying.py): Metaflow calls it after
the run ends, in its own process, with the client ``Run``. The URL is the run's ``--notify``
parameter (default: the flow config's ``notify_url``); empty means no notification. A Slack
incoming webhook (hooks.slack.com) gets Slack's ``{"text": ...}``, any other URL the document::

    {"flow": "PreprocessFlow", "run": "PreprocessFlow/17", "status": "failed", "headline": "",
     "summary": null, "estimated_usd": null, "failed_step": "process_shard",
     "error": "ValueError: ..."}

A notifier failure (unreachable, slow, HTTP error) is logged and never changes the run's outcome:
one attempt with a short timeout, no retries.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

from steps.progress import log
from steps.run_outcome import RunOutcome, outcome_of

URL_PARAMETER = "notify_url"  # the flows' attribute name of ``--notify``
SLACK_HOSTS = ("hooks.slack.com",)
TIMEOUT_S = 10.0


def notify_run_end(run: Any = None) -> None:
    """Metaflow exit hook (on success and on error): post ``run``'s outcome to its ``--notify`` URL."""
    if run is None:  # Metaflow could not load the run; nothing to say or to say it to
        return
    url = notify_url_of(run)
    if url:
        post(url, outcome_of(run))


def notify_url_of(run: Any) -> str:
    """The run's ``--notify`` value. Metaflow stores parameters as artifacts of every task, a
    failed one's too, so the latest step's first task has it (the client's public API; a run that
    failed before any task ran has no task to say where to post)."""
    for step in run:  # latest step first
        for task in step:
            return str(task[URL_PARAMETER].data or "") if URL_PARAMETER in task else ""
    return ""


def document(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "flow": outcome.flow,
        "run": outcome.pathspec,
        "status": outcome.status,
        "headline": outcome.headline,
        "summary": outcome.summary,
        "estimated_usd": outcome.estimated_usd,
        "failed_step": outcome.failed_step,
        "error": outcome.error,
    }


def slack_text(outcome: RunOutcome) -> str:
    if outcome.succeeded:
        cost = f" (≈ ${outcome.estimated_usd:,.2f})" if outcome.estimated_usd else ""
        return f":white_check_mark: {outcome.pathspec} succeeded{cost}: {outcome.headline}"
    return f":x: {outcome.pathspec} failed in step {outcome.failed_step or '?'}: {outcome.error}"


def is_slack(url: str) -> bool:
    return (urlparse(url).hostname or "") in SLACK_HOSTS


def post(url: str, outcome: RunOutcome, timeout_s: float = TIMEOUT_S) -> bool:
    """POST the outcome once; True if the server answered 2xx. Failures are logged, not raised."""
    body = {"text": slack_text(outcome)} if is_slack(url) else document(outcome)
    request = urllib.request.Request(
        url,
        data=json.dumps(body, default=str).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            log(f"notified {urlparse(url).hostname}: {outcome.pathspec} {outcome.status} (HTTP {response.status})")
            return True
    except (urllib.error.URLError, OSError, ValueError) as error:
        log(f"notification to {urlparse(url).hostname} failed ({error}); the run's outcome is unchanged")
        return False
