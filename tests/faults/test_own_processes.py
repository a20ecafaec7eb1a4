"""The kill helpers pick victims only below the process the test started: a look-alike task of
another run on this machine (same command line) must survive them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.support.flows import first_attempt_task_pids, spawned_children
from tests.support.processes import descendants, look_alike_task

# A stand-in for `flows/x.py run`: it starts one first-attempt `process_shard` task and waits.
FLOW_LIKE = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)',"
    " 'step', 'process_shard', '--retry-count', '0'])\n"
    "time.sleep(600)\n"
)


def test_only_the_task_below_the_started_process_is_picked() -> None:
    with look_alike_task("process_shard") as stranger:
        flow = subprocess.Popen([sys.executable, "-c", FLOW_LIKE])
        try:
            deadline = time.monotonic() + 30
            while not (picked := first_attempt_task_pids(flow.pid, "process_shard")):
                assert time.monotonic() < deadline, "the flow's task never appeared"
                time.sleep(0.05)
            assert picked == descendants(flow.pid), "the flow's own task is the one picked"
            assert stranger.pid not in picked
            # Command line alone would have matched the stranger: the tree is what keeps it safe.
            assert first_attempt_task_pids(stranger.pid, "process_shard") == []
            assert spawned_children(flow.pid) == []  # no multiprocessing ranks in this tree
        finally:
            for pid in descendants(flow.pid):
                os.kill(pid, signal.SIGKILL)
            flow.kill()
            flow.wait()
        assert stranger.poll() is None, "the look-alike outside the flow's tree was signalled"
