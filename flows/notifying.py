"""``@notify_on_exit``: the flows' ``--notify`` exit hook (steps/notify.py does the posting).

Metaflow's ``@exit_hook`` runs the hook after the run ends, success or failure: on the launching
machine for ``run`` and ``run --with batch``/``kubernetes`` (the local runtime orchestrates),
and as an exit-handler container on Argo Workflows. AWS Step Functions has no exit hooks —
``step-functions create`` refuses a flow carrying one — so when this process compiles for Step
Functions the hook is left off and the deployed state machine does not notify (route its
"Execution Status Change" EventBridge events to the webhook instead).
"""

import sys

from metaflow import exit_hook

# By import path: the hook runs in its own process, where only the installed package is importable.
HOOK = "steps.notify.notify_run_end"


def notify_on_exit(flow_class):
    if "step-functions" in sys.argv:
        return flow_class
    return exit_hook(on_success=[HOOK], on_error=[HOOK])(flow_class)
