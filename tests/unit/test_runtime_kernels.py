"""The Triton decoding kernels: when the runtime picks them, and the kernels themselves under
Triton's CPU interpreter (checks in interpreted_kernels.py)."""

from __future__ import annotations

import re

import pytest
import torch

from medusa_common.contract import UserError
from medusa_runtime.engine.model import LlamaConfig, LlamaModel, kernels_unsupported
from tiny_llama import HF_CONFIG, write_tiny_model

pytest.importorskip("triton")


def test_kernels_under_the_triton_interpreter(interpreted_kernel_checks):
    """The checks run in a process of their own, started when collection ends (fixtures/interpreter.py)."""
    result = interpreted_kernel_checks
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert re.search(r"^34 passed in ", result.stdout, re.MULTILINE), result.stdout[-2000:]  # none skipped


def test_the_cpu_decodes_in_float32_through_torch_operations(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    folder = write_tiny_model(tmp_path / "tiny")
    model = LlamaModel.load(folder, dtype="auto", device="cpu")
    assert (model.dtype, model.kernels) == (torch.float32, False)
    assert LlamaModel.load(folder, dtype="bfloat16", device="cpu").kernels is False
    with pytest.raises(UserError, match="need a CUDA device; use kernels off"):
        LlamaModel.load(folder, device="cpu", kernels="on")


def test_bad_kernel_settings_are_refused_with_the_choices(tmp_path):
    folder = write_tiny_model(tmp_path / "tiny")
    with pytest.raises(UserError, match="unknown kernels setting 'fast'; use auto, on or off"):
        LlamaModel.load(folder, kernels="fast")
    with pytest.raises(UserError, match="unknown dtype 'int8'; use auto or one of"):
        LlamaModel.load(folder, dtype="int8")


def test_kernels_refuse_float16_and_odd_head_sizes():
    cuda = torch.device("cuda")  # only compared, never allocated on
    cfg = LlamaConfig.from_hf({**HF_CONFIG, "num_hidden_layers": 1})
    assert kernels_unsupported(cfg, cuda, "bfloat16") is None
    assert "use bfloat16" in kernels_unsupported(cfg, cuda, "float16")
    odd = LlamaConfig.from_hf({**HF_CONFIG, "num_hidden_layers": 1, "head_dim": 24})
    assert "head size 24" in kernels_unsupported(odd, cuda, "bfloat16")


# Issue 26: projection tiles come from a per-shape table; trees of up to 64 rows read each
# weight block once. The kernels' arithmetic under those tiles is checked in
# interpreted_kernels.py (and on a GPU in tests/gpu/test_linear_tiles.py).

def test_tiles_come_from_the_table_then_by_weight_depth(monkeypatch):
    from medusa_runtime.engine import kernels
    from medusa_runtime.engine.kernels import LARGE_K, LARGE_WEIGHT_TILES, LinearTiles

    listed = LinearTiles(48, 96, 4, 2, 3)  # an entry no rule would produce
    monkeypatch.setitem(kernels.LINEAR_TILE_TABLE, ("norm", 1000, 3000), listed)
    assert kernels.linear_tiles(1000, 3000, "norm") is listed
    # An unlisted projection as deep as a 1B model's hidden size is bound by its weight's bytes:
    # it takes its kind's large-weight tiles, not the small-model rule.
    for kind in ("norm", "plain", "gated", "argmax"):
        assert kernels.linear_tiles(1000, LARGE_K, kind) == LARGE_WEIGHT_TILES[kind]
        assert LARGE_WEIGHT_TILES[kind] != kernels._rule_tiles(1000, LARGE_K, kind)
    # SmolLM2-135M's projections keep the small-model rule: one 16-row tile a program, since its
    # steps are bound by launches and a tree's second tile in its own program costs least there.
    smollm2 = [(kind, n, 576) for kind, n in (("norm", 960), ("plain", 576), ("gated", 1536), ("argmax", 49152))]
    for kind, n, k in smollm2 + [("plain", 576, 1536)]:
        assert kernels.linear_tiles(n, k, kind).row_tiles == 1, (kind, n, k)
    # float32 weights need twice the shared memory the table was measured with: the rule.
    assert kernels.linear_tiles(1000, 3000, "norm", element_size=4).row_tiles == 1


def test_a_tile_override_replaces_the_table_within_its_block_only(monkeypatch):
    from medusa_runtime.engine import kernels
    from medusa_runtime.engine.kernels import LinearTiles

    listed, other = LinearTiles(48, 96, 4, 2, 3), LinearTiles(16, 64, 2, None, 2)
    monkeypatch.setitem(kernels.LINEAR_TILE_TABLE, ("plain", 1000, 3000), listed)
    with kernels.tile_table({("plain", 1000, 3000): other}):
        assert kernels.linear_tiles(1000, 3000, "plain") is other
        with kernels.tile_table({}):  # the rule alone, as before the table
            assert kernels.linear_tiles(1000, 3000, "plain") == kernels._rule_tiles(1000, 3000, "plain")
        assert kernels.linear_tiles(1000, 3000, "plain") is other
    assert kernels.linear_tiles(1000, 3000, "plain") is listed


def test_table_entries_fit_the_kernel():
    """Every listed tiling can run: power-of-two blocks the matrix units take, at most the
    kernel's unrolled row tiles; 16-row tiles take at most the 64 rows of a 63-node tree in one
    program (more 64-row tiles a program serve prompts only)."""
    from medusa_runtime.engine import kernels

    for key, tiles in [*kernels.LINEAR_TILE_TABLE.items(), *kernels.LARGE_WEIGHT_TILES.items()]:
        for block in (tiles.block_n, tiles.block_k, tiles.block_m):
            assert block >= 16 and block & (block - 1) == 0, key
        assert 1 <= tiles.row_tiles <= kernels.MAX_ROW_TILES, key
        assert tiles.block_m == 64 or tiles.block_m * tiles.row_tiles <= 64, key
        assert tiles.programs_per_sm >= 0, key
        assert tiles.warps in (1, 2, 4, 8, 16), key
        assert tiles.split_k >= 1, key
        # A prefetch asks for 64-value lines, BLOCKS x block_k / 64 of them, a power of two (tl.arange).
        assert tiles.prefetch == 0 or (tiles.prefetch & (tiles.prefetch - 1) == 0 and tiles.block_k >= 64), key


@pytest.mark.parametrize("n, k, tiles", [
    (28672, 4096, (128, 64, 1)),  # Llama-3-8B gate/up stacked: 112 column tiles on 132 SMs
    (4608, 3584, (128, 64, 2)),  # Qwen2-7B qkv, two programs per SM
    (2048, 8192, (64, 128, 1)),
    (300, 40, (16, 16, 1)),  # a partial last column tile and K block
    (48, 64, (16, 16, 3)),  # fewer K blocks than programs: runs of one block
])
@pytest.mark.parametrize("sms", [132, 114, 7, 1])
def test_runs_of_k_blocks_cover_every_block_once_within_the_spans_made_for_them(n, k, tiles, sms):
    """Issue 26: the partial-sum buffers a launch makes must hold every span a column tile is cut
    into by the runs' ends, and the runs must cover each K block of each column tile once."""
    from medusa_runtime.engine import kernels

    block_n, block_k, per_sm = tiles
    plan = kernels.linear_launch(n, k, kernels.LinearTiles(block_n, block_k, 4, 3, 1, 64, programs_per_sm=per_sm),
                                 sms)
    column_tiles, blocks = -(-n // block_n), -(-k // block_k)
    assert plan.splits == 1 and plan.programs <= per_sm * sms
    covered = [0] * (column_tiles * blocks)
    runs_per_tile = [set() for _ in range(column_tiles)]
    for program in range(plan.programs):
        for unit in range(program * plan.run_blocks, min((program + 1) * plan.run_blocks, len(covered))):
            covered[unit] += 1
            runs_per_tile[unit // blocks].add(program)
    assert covered == [1] * len(covered)
    assert max(len(runs) for runs in runs_per_tile) <= plan.spans
    # Every program has blocks to read: none is launched for nothing.
    assert (plan.programs - 1) * plan.run_blocks < len(covered)


def test_a_packed_weight_holds_each_programs_blocks_in_one_stretch():
    """Issue 26: the blocks a program reads in turn, a column tile's in K order, then the next
    column tile's, lie one after another; a gated projection's gate and up blocks of the same
    columns side by side; edges padded with zeros; unpacking gives the weight back."""
    from medusa_runtime.engine.weights import PackedWeight, dense

    weight = torch.arange(2 * 5 * 7, dtype=torch.float32).view(10, 7)  # gate rows 0-4, up rows 5-9
    packed = PackedWeight.pack(weight, block_n=4, block_k=4, gated=True)
    assert packed.data.shape == (2, 2, 2, 4, 4)  # column tiles, K blocks, gate/up, block_n, block_k
    flat = packed.data.reshape(-1)
    block = 4 * 4
    # The first column tile's first K block: gate columns 0-3 then up columns 0-3, K 0-3.
    assert torch.equal(flat[:block].view(4, 4), weight[0:4, 0:4])
    assert torch.equal(flat[block:2 * block].view(4, 4), weight[5:9, 0:4])
    # Then the same columns' second K block (K 4-6, one padded), then the second column tile.
    assert torch.equal(flat[2 * block:3 * block].view(4, 4)[:, :3], weight[0:4, 4:7])
    assert not flat[2 * block:3 * block].view(4, 4)[:, 3].any()
    assert torch.equal(flat[4 * block:5 * block].view(4, 4)[0], weight[4, 0:4])  # the last gate column
    assert not flat[4 * block:5 * block].view(4, 4)[1:].any()  # columns past N are zeros
    assert torch.equal(dense(packed), weight) and dense(weight) is weight
    assert (packed.shape, packed.numel(), packed.element_size()) == (weight.shape, 70, 4)
    plain = PackedWeight.pack(weight, block_n=8, block_k=8, gated=False)
    assert not plain.gated and torch.equal(plain.unpacked(), weight)
    with pytest.raises(ValueError, match="gate and up: 9 rows do not halve"):
        PackedWeight.pack(weight[:9], 4, 4, gated=True)


def test_tiles_that_pack_their_weight_round_trip_and_refuse_a_row_major_prefetch():
    from medusa_runtime.engine.kernels import LinearTiles

    tiles = LinearTiles(128, 64, 8, 4, 2, 64, packed=True)
    assert LinearTiles.from_json(tiles.to_json()) == tiles
    assert LinearTiles.from_json({k: v for k, v in tiles.to_json().items() if k != "packed"}).packed is False
    with pytest.raises(ValueError, match="prefetch .* packed weight has none"):
        LinearTiles(128, 64, 8, 4, 2, 64, prefetch=2, packed=True)
