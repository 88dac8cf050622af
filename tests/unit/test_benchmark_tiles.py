"""benchmarks/linear_tiles.py's choice among measured tilings (issue 26: tile choices come from
measurements per shape), without a GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

import linear_tiles  # noqa: E402
from medusa_runtime.engine.kernels import LinearTiles  # noqa: E402


def test_the_least_total_time_over_the_row_counts_wins():
    quick_alone, quick_in_trees, broken = (LinearTiles(16, 256, 2, 3, 4), LinearTiles(64, 128, 4, 3, 4),
                                           LinearTiles(128, 128, 8, 3, 4))
    measured = {
        quick_alone: {1: 10.0, 64: 40.0},
        quick_in_trees: {1: 12.0, 64: 20.0},
        broken: {1: 1.0, 64: None},  # out of shared memory at 64 rows: never chosen
    }
    assert linear_tiles.choose(measured) == quick_in_trees


def test_no_complete_candidate_is_an_error():
    with pytest.raises(RuntimeError, match="no candidate tiling ran at every row count"):
        linear_tiles.choose({LinearTiles(16, 256, 2, 3, 4): {1: None}})
