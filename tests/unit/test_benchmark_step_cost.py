"""benchmarks/step_cost.py's comparisons of attention shapes and L2 warming, without a GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

import step_cost  # noqa: E402
from medusa_runtime.engine import kernels  # noqa: E402


def test_an_attention_shape_holds_within_its_block_only():
    runtime = kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS, kernels.TREE_CHUNK_TOKENS
    with step_cost.attention_shape(64, 32, 5):
        assert (kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS, kernels.TREE_CHUNK_TOKENS) == (64, 32, 5)
        with step_cost.attention_shape(None, None):  # the runtime's own: what is in effect
            assert (kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS, kernels.TREE_CHUNK_TOKENS) == (64, 32, 5)
    assert (kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS, kernels.TREE_CHUNK_TOKENS) == runtime
    with pytest.raises(RuntimeError), step_cost.attention_shape(32, 64, 2):
        raise RuntimeError("a failed run")
    assert (kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS, kernels.TREE_CHUNK_TOKENS) == runtime


@pytest.mark.parametrize("spec, shape", [("runtime", (None, None, None)), ("64:16", (64, 16, None)),
                                         ("128:16:4", (128, 16, 4))])
def test_attention_shapes_name_chunk_rows_and_tree_tokens(spec, shape):
    assert step_cost.parse_attention(spec) == shape


@pytest.mark.parametrize("spec", ["100:16", "64", "64:8", "sixty:16", "128:16:0", "128:16:4:2", "128:16:"])
def test_attention_shapes_must_be_powers_of_two_of_16_or_more(spec, capsys):
    with pytest.raises(SystemExit) as exit_info:
        step_cost.main(["--device", "cpu", "--attention", spec])
    assert exit_info.value.code == 2
    assert f"TOKENS at least 1; got {spec}" in capsys.readouterr().err


def test_an_l2_warming_setting_holds_within_its_block_only():
    runtime = kernels.WARM_L2
    with step_cost.warm_l2("off"):
        assert kernels.WARM_L2 is False
        with step_cost.warm_l2(None):  # the runtime's own: what is in effect
            assert kernels.WARM_L2 is False
        with step_cost.warm_l2("on"):
            assert kernels.WARM_L2 is True
    assert kernels.WARM_L2 == runtime
    with pytest.raises(RuntimeError), step_cost.warm_l2("off" if runtime else "on"):
        raise RuntimeError("a failed run")
    assert kernels.WARM_L2 == runtime


def test_tree_steps_are_compared_with_the_plain_step_of_their_own_variant():
    def row(nodes, ms, warm):
        return {"implementation": "kernels", "dtype": "bfloat16", "nodes": nodes, "draftVocabulary": 10,
                "msPerStep": ms, "warmL2": warm}

    rows = [row(0, 6.0, "off"), row(31, 6.6, "off"), row(0, 5.0, "on"), row(31, 5.5, "on")]
    by_variant = {(r["warmL2"], r["nodes"]): r for r in step_cost.summary(rows, floor_ms=4.0)}
    assert by_variant[("off", 31)]["vsPlain"] == pytest.approx(1.1)
    assert by_variant[("on", 31)]["vsPlain"] == pytest.approx(1.1)
    assert by_variant[("on", 0)]["vsFloor"] == pytest.approx(1.25)
