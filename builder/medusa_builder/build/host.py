"""What the machine a build runs on is: this builder's version and the GPU it sees."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

BUILDER_DISTRIBUTION = "medusa-builder"


def builder_version() -> str:
    """This package's installed version, or ``source`` in a checkout that is not installed."""
    try:
        from importlib.metadata import version

        return version(BUILDER_DISTRIBUTION)
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        return "source"


def gpu_description() -> dict[str, Any]:
    """Name and compute capability of GPU 0 from nvidia-smi, or empty values when none is visible."""
    if not shutil.which("nvidia-smi"):
        return {"name": None, "computeCapability": None, "count": 0}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {"name": None, "computeCapability": None, "count": 0}
    rows = [[part.strip() for part in line.split(",")] for line in out.strip().splitlines() if line.strip()]
    if not rows:
        return {"name": None, "computeCapability": None, "count": 0}
    return {"name": rows[0][0], "computeCapability": rows[0][1] if len(rows[0]) > 1 else None, "count": len(rows)}
