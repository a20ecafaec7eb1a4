"""Run a foreach task's work under the spot watcher and the retry policy.

Metaflow's ``@retry`` retries any failure. Inside ``spot_guard`` a deterministic failure (bad
configuration, a bug) exits with Metaflow's "do not retry" status instead, so it fails fast and
keeps the retries for what is transient: spot loss, throttling, 5xx, broken connections.
"""

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from threading import Event

from metaflow.exception import METAFLOW_EXIT_DISALLOW_RETRY

from steps.progress import log
from steps.spot import is_transient, watch_interruptions


@contextmanager
def spot_guard() -> Iterator[Event]:
    with watch_interruptions() as stop:
        try:
            yield stop
        except Exception as error:
            if is_transient(error):
                log(f"transient failure, the task will be retried: {error.__class__.__name__}: {error}")
                raise
            traceback.print_exc()
            log(f"not retrying: {error.__class__.__name__} is deterministic, another attempt would fail the same way")
            raise SystemExit(METAFLOW_EXIT_DISALLOW_RETRY) from error
