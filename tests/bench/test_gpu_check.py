"""The GPU device check runs where it will run: an interpreter with torch, torchvision, numpy, Pillow,
pyarrow and pandas, and none of the project's other dependencies (a lent GPU machine has no package
registry, and its device time is too short to learn this there)."""

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
ON_THE_DEVICE = ("torch", "torchvision", "numpy", "pillow", "pyarrow", "pandas")


def with_requirements(names: tuple[str, ...]) -> set[str]:
    """``names`` and everything they require here (installed distributions, markers evaluated)."""
    found, pending = set(), [canonicalize_name(name) for name in names]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return found


def device_like_python(directory: Path) -> Path:
    """A ``python`` that sees the standard library and the device machine's packages only: no
    site-packages (``-S``), and on its path a folder of links to just those packages' files."""
    packages = directory / "site-packages"
    packages.mkdir(parents=True)
    for name in sorted(with_requirements(ON_THE_DEVICE)):
        distribution = metadata.distribution(name)
        for top in {file.parts[0] for file in distribution.files or [] if ".." not in file.parts}:
            link = packages / top
            if not link.exists() and top != "__pycache__":
                link.symlink_to(distribution.locate_file(top))
    python = directory / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{packages}:$PYTHONPATH" exec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    return python


def test_smoke_run_with_only_the_device_machines_packages(tmp_path: Path) -> None:
    python = device_like_python(tmp_path)
    probe = "import importlib.util as u; print(*(m for m in {} if u.find_spec(m)))"
    for modules, expected in (
        (("metaflow", "boto3", "botocore", "obstore", "simplejpeg", "skimage"), ""),
        (("torch", "torchvision", "numpy", "PIL", "pyarrow", "pandas"), "torch torchvision numpy PIL pyarrow pandas"),
    ):
        found = subprocess.run([python, "-c", probe.format(modules)], capture_output=True, text=True, check=True)
        assert found.stdout.strip() == expected
    done = subprocess.run(
        [ROOT / "bench" / "gpu_check.sh", "--smoke"],
        check=False,
        env={**os.environ, "PYTHON": str(python)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "same as CPU: True" in done.stdout
    rows = {label.strip(): rate.strip() for label, rate in re.findall(r"^\| (.+?) \| (.+?) \|", done.stdout, re.M)}
    measured = [label for label in rows if label.startswith(("end to end", "preprocessing", "model only: Predictor"))]
    assert len(measured) == 6, rows
    for label in measured:
        assert re.fullmatch(r"[\d,.]+", rows[label]), f"{label}: {rows[label]}"
    assert "end to end from tar shards: --decode gpu (decode_jpeg on cpu), 11 timed" in rows
    ratios = re.findall(r"^ratio: from (JPEG files|tar shards): [\d,.]+ img/s, [\d.]+ of Predictor", done.stdout, re.M)
    assert ratios == ["JPEG files", "tar shards"], done.stdout
