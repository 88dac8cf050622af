"""The Triton decoding kernels under Triton's CPU interpreter (checks in interpreted_kernels.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
CHECKS = Path(__file__).with_name("interpreted_kernels.py")


def test_kernels_under_the_triton_interpreter():
    """Triton decides whether to interpret when first imported: the checks need a fresh process."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", str(CHECKS)],
        env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=CHECKS.parents[2], capture_output=True, text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "6 passed" in result.stdout, result.stdout[-2000:]  # not skipped
