"""benchmarks/linear_tiles.py's choice among measured tilings (issue 26: tile choices come from
measurements per shape), without a GPU."""

from __future__ import annotations

import sys
from dataclasses import replace
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


def test_a_weight_larger_than_the_cache_is_still_rotated_with_another_copy():
    """A launch timed over one copy re-reads the weight the launch before read, and may find part
    of it in the L2 cache; a decoding step reads each layer's weight once (issue 26: tile choices
    measured as a step runs them)."""
    l2 = 50 * 2**20
    gate_up_8b = 2 * 14336 * 4096 * 2  # larger than three caches: the old rule rotated one copy
    assert linear_tiles.weight_copies(gate_up_8b, l2) == 2
    qkv_8b = 6144 * 4096 * 2
    copies = linear_tiles.weight_copies(qkv_8b, l2)
    assert copies * qkv_8b >= 3 * l2 and (copies - 1) * qkv_8b < 3 * l2


def test_the_sweep_by_default_covers_every_projection_the_shapes_have():
    """`--kinds` defaults to the kernels' tile kinds: a projection of another kind would silently
    go unmeasured, and a kind without large-weight tiles would have no fallback."""
    from medusa_runtime.engine.kernels import LARGE_WEIGHT_TILES, TILE_KINDS
    from medusa_runtime.engine.model import LlamaConfig
    from model_shapes import SHAPES, projections

    kinds = {p["kind"] for shape in SHAPES.values() for p in projections(LlamaConfig.from_hf(shape))}
    assert kinds <= set(TILE_KINDS)
    assert set(LARGE_WEIGHT_TILES) == set(TILE_KINDS)


def test_a_prompts_row_tiles_are_chosen_among_those_a_tree_does_not_notice(monkeypatch):
    """Issue 26 (the plain step includes its share of the prompt): 64-row tiles give a tree one
    tile, so a program may take more of them for a prompt and read each weight block once for
    all; 16-row tiles already serve trees with their row tiles, which a prompt then keeps. The
    timings are scripted (no GPU here): what is tested is which row tiles are tried and chosen."""
    us = {1: 30.0, 2: 20.0, 3: 25.0, 4: 22.0}
    timed = []

    def fake_time(projection, tiles, rows, device):
        timed.append((tiles.row_tiles, rows))
        return us[tiles.row_tiles]

    monkeypatch.setattr(linear_tiles, "time_us", fake_time)
    best, measured = linear_tiles.prompt_row_tiles({}, LinearTiles(128, 64, 8, 4, 1, 64), 200, None)
    assert best == LinearTiles(128, 64, 8, 4, 2, 64) and measured == us
    assert timed == [(1, 200), (2, 200), (3, 200), (4, 200)]
    timed.clear()
    best, measured = linear_tiles.prompt_row_tiles({}, LinearTiles(64, 128, 4, 3, 4, 16), 200, None)
    assert best == LinearTiles(64, 128, 4, 3, 4, 16) and timed == [(4, 200)]


def test_each_tiling_is_timed_in_the_layouts_asked_for_and_the_rule_row_major():
    from medusa_runtime.engine import kernels

    gate_up = {"kind": "gated", "n": 14336, "k": 4096}
    table = kernels.LINEAR_TILE_TABLE[("gated", 14336, 4096)]
    rule = kernels._rule_tiles(14336, 4096, "gated")
    both = linear_tiles.candidates(gate_up, "table", ["row-major", "packed"])
    assert both == [replace(table, packed=False), replace(table, packed=True), rule]
    assert linear_tiles.candidates(gate_up, "table", ["packed"]) == [replace(table, packed=True), rule]
    sweep = linear_tiles.candidates(gate_up, "sweep", ["row-major", "packed"])
    assert len(sweep) == 2 * len(linear_tiles.CANDIDATES) + (rule not in linear_tiles.CANDIDATES)
    assert all(t.prefetch == 0 for t in sweep if t.packed)
