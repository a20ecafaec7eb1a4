"""Flow files are light to import: Metaflow imports the flow file again for every task and every card
refresh, so torch, torchvision, pandas, matplotlib, Arrow, numpy and Pillow load inside the steps that
use them (Arrow and numpy alone cost ~0.3 s of CPU in each of those processes)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.flows import REPO

FLOWS = ("preprocess", "train", "infer", "dispatch")
HEAVY = ("torch", "torchvision", "pandas", "matplotlib", "pyarrow", "numpy", "PIL")

# One fresh interpreter: each flow file is imported in turn and what it pulled in is noted.
PROBE = """
import json, sys
sys.path.insert(0, "flows")
found = {}
for name in sys.argv[1].split(","):
    before = set(sys.modules)
    __import__(name)
    found[name] = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in sys.argv[2].split(","))
print(json.dumps(found))
"""


def test_importing_a_flow_file_loads_no_heavy_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(FLOWS), ",".join(HEAVY)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found = json.loads(result.stdout.splitlines()[-1])
    assert set(found) == set(FLOWS)
    assert {flow: sorted({m.split(".")[0] for m in modules}) for flow, modules in found.items() if modules} == {}
