"""benchmarks/step_cost.py's comparisons of attention shapes, without a GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

import step_cost  # noqa: E402
from medusa_runtime.engine import kernels  # noqa: E402


def test_an_attention_shape_holds_within_its_block_only():
    runtime = kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS
    with step_cost.attention_shape(64, 32):
        assert (kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS) == (64, 32)
        with step_cost.attention_shape(None, None):  # the runtime's own: what is in effect
            assert (kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS) == (64, 32)
    assert (kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS) == runtime
    with pytest.raises(RuntimeError), step_cost.attention_shape(32, 64):
        raise RuntimeError("a failed run")
    assert (kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS) == runtime


@pytest.mark.parametrize("spec", ["100:16", "64", "64:8", "sixty:16"])
def test_attention_shapes_must_be_powers_of_two_of_16_or_more(spec, capsys):
    with pytest.raises(SystemExit) as exit_info:
        step_cost.main(["--device", "cpu", "--attention", spec])
    assert exit_info.value.code == 2
    assert f"--attention takes runtime or CHUNK:ROWS, powers of two of at least 16; got {spec}" in capsys.readouterr().err


def test_tree_steps_are_compared_with_the_plain_step_of_their_own_variant():
    def row(nodes, ms, attention):
        return {"implementation": "kernels", "dtype": "bfloat16", "nodes": nodes, "draftVocabulary": 10,
                "msPerStep": ms, "attention": attention}

    rows = [row(0, 6.0, "128:16"), row(31, 6.6, "128:16"), row(0, 5.0, "64:16"), row(31, 5.5, "64:16")]
    by_variant = {(r["attention"], r["nodes"]): r for r in step_cost.summary(rows, floor_ms=4.0)}
    assert by_variant[("128:16", 31)]["vsPlain"] == pytest.approx(1.1)
    assert by_variant[("64:16", 31)]["vsPlain"] == pytest.approx(1.1)
    assert by_variant[("64:16", 0)]["vsFloor"] == pytest.approx(1.25)
