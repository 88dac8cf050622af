"""benchmarks/step_breakdown.py's attribution of a profiled step's kernels to their roles in the
layer (issue 26: measure where a step's time goes), without a GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

import step_breakdown  # noqa: E402


def _step(layers: int, start: float) -> list[dict]:
    """One step's kernels as the profiler lists them: the embedding, per layer the qkv projection,
    RoPE, attention and its combine, then o, gate/up and down; then the output layer."""
    names = ["index_select"]
    for _ in range(layers):
        names += ["_linear_kernel", "_rope_store_kernel", "_attention_chunk_kernel", "_attention_combine_kernel",
                  "_linear_kernel", "_linear_kernel", "_linear_kernel"]
    names += ["_linear_kernel", "argmax"]
    durations = {"_rope_store_kernel": 2.0, "_attention_chunk_kernel": 5.0, "_attention_combine_kernel": 1.0}
    events, ts = [], start
    for i, name in enumerate(names):
        dur = durations.get(name, 10.0 + (i % 8))
        events.append({"name": name, "ts": ts, "dur": dur})
        ts += dur + 1.0  # a microsecond idle after every kernel
    return events


def test_projections_are_named_by_their_place_in_the_layer():
    layers, steps = 3, 2
    events = _step(layers, 0.0) + _step(layers, 1000.0)
    summary = step_breakdown.summarise(events, steps, layers)
    assert summary["launchesPerStep"] == {"other: index_select": 1, "qkv": 3, "rope": 3, "attention": 3,
                                          "attention combine": 3, "o": 3, "gate_up": 3, "down": 3, "lm_head": 1,
                                          "other: argmax": 1}
    first = _step(layers, 0.0)
    qkv = sum(e["dur"] for i, e in enumerate(first) if i % 7 == 1 and i < 1 + 7 * layers)
    assert summary["usPerStep"]["qkv"] == qkv
    assert summary["usPerStep"]["lm_head"] == first[-2]["dur"]
    assert summary["busyUsPerStep"] == sum(e["dur"] for e in first)


def test_idle_time_is_the_span_less_the_kernels():
    events = _step(1, 0.0)
    summary = step_breakdown.summarise(events, 1, 1)
    assert summary["idleUsPerStep"] == pytest.approx(len(events) - 1)  # the last kernel's idle is past the span


def test_no_kernels_is_reported_not_divided_by():
    assert "error" in step_breakdown.summarise([], 5, 32)


def test_a_prefetch_override_leaves_packed_entries_without_prefetch():
    from medusa_runtime.engine import kernels

    table = step_breakdown.prefetching_table(2)
    assert table.keys() == kernels.LINEAR_TILE_TABLE.keys()
    packed = [key for key, tiles in kernels.LINEAR_TILE_TABLE.items() if tiles.packed]
    assert packed, "the table has packed entries to leave alone"
    for key, tiles in table.items():
        assert tiles.prefetch == (0 if key in packed else 2), key
        assert tiles.block_n == kernels.LINEAR_TILE_TABLE[key].block_n
