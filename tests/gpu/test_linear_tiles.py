"""The projection kernel's tilings on a CUDA GPU (skipped without one): in bfloat16, whatever the
tiling and however many 16-row tiles one program takes, a row comes out bit-identical to the
same row projected alone (issue 26: trees of up to 64 rows read each weight block once and keep
Medusa's output identical to greedy decoding), also when K is cut into spans summed apart."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from medusa_runtime.engine import kernels
from medusa_runtime.engine.kernels import LARGE_WEIGHT_TILES, LINEAR_TILE_TABLE, LinearTiles
from medusa_runtime.engine.weights import PackedWeight

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TILINGS = [LinearTiles(16, 256, 2, 3, 4), LinearTiles(32, 128, 4, 3, 2), LinearTiles(128, 64, 4, 4, 4),
           LinearTiles(64, 128, 4, 3, 1, 64), LinearTiles(128, 64, 8, 3, 1, 64),
           LinearTiles(64, 64, 4, 4, 1, 64, 2), LinearTiles(32, 256, 2, 3, 4, 16, 4),
           LinearTiles(64, 128, 4, 3, 1, 64, 2, prefetch=2), LinearTiles(32, 128, 4, 3, 1, 64, 4, prefetch=4),
           # Runs of K blocks. On a 132-SM card: one block a run, so a column tile sums 32 spans; two;
           # and six (16-column tiles), so that runs start and end inside column tiles.
           LinearTiles(128, 64, 8, 4, 1, 64, programs_per_sm=1), LinearTiles(64, 64, 4, 4, 1, 64, programs_per_sm=2),
           LinearTiles(32, 128, 4, 3, 4, 16, programs_per_sm=1, prefetch=2),
           LinearTiles(16, 64, 2, 3, 4, 16, programs_per_sm=1),
           # Several 64-row tiles a program: a prompt's (a tree has one).
           LinearTiles(128, 64, 8, 4, 2, 64),
           LinearTiles(128, 64, 4, 3, 3, 64, programs_per_sm=2)]
# The runtime's own tiles, each for the projections it is chosen for (some of its several-row-tile
# entries would not fit a float32 input's tiles in shared memory; their projections never get one).
CHOSEN = list(dict.fromkeys([*LARGE_WEIGHT_TILES.items(),
                             *((kind, t) for (kind, _, _), t in LINEAR_TILE_TABLE.items())]))
PROJECTIONS = [(kind, t) for t in TILINGS for kind in ("norm", "gated", "plain")] + [
    (kind, t) for kind, t in CHOSEN if kind != "argmax"]
N, K = 384, 2048


@pytest.fixture(scope="module")
def tensors():
    gen = torch.Generator(device="cuda").manual_seed(0)
    return {
        "x": torch.randn(200, K, generator=gen, device="cuda"),  # a prompt's rows: several row groups
        "w": (torch.randn(2 * N, K, generator=gen, device="cuda") * 0.02).bfloat16(),
        "norm": (torch.rand(K, generator=gen, device="cuda") + 0.5).bfloat16(),
        "bias": torch.randn(N, generator=gen, device="cuda").bfloat16(),
        "res": torch.randn(200, N, generator=gen, device="cuda"),
        "vocab": (torch.randn(9000, K, generator=gen, device="cuda") * 0.02).bfloat16(),
    }


@pytest.mark.parametrize("kind, tiles", PROJECTIONS, ids=[f"{kind}-{t}" for kind, t in PROJECTIONS])
def test_every_row_of_a_tree_equals_the_row_alone(tensors, tiles, kind):
    x, w = tensors["x"], tensors["w"] if kind == "gated" else tensors["w"][:N]
    if kind == "plain":
        x = x.bfloat16()  # as the runtime feeds o and down (same bits: the test below)

    def project(first: int, count: int) -> torch.Tensor:
        rows = x[first:first + count]
        if kind == "norm":
            return kernels.linear(rows, w, bias=tensors["bias"], norm=tensors["norm"], eps=1e-5)
        if kind == "gated":
            return kernels.linear(rows, w, norm=tensors["norm"], eps=1e-5, gated=True)
        return kernels.linear(rows, w, residual=tensors["res"][first:first + count].clone())

    with kernels.tile_table({(kind, N, K): tiles}):
        together = {count: project(0, count) for count in (16, 32, 64, 200)}
        for count, out in together.items():
            for i in (0, 5, count - 1):
                assert torch.equal(out[i], project(i, 1)[0]), (count, i)
    normed = torch.nn.functional.rms_norm(tensors["x"], (K,), tensors["norm"].float(), 1e-5).bfloat16().float()
    if kind == "norm":
        reference = normed @ w.float().T + tensors["bias"].float()
    elif kind == "gated":
        gate, up = (normed @ w.float().T).chunk(2, dim=-1)
        reference = torch.nn.functional.silu(gate) * up
    else:
        reference = x.bfloat16().float() @ w.float().T + tensors["res"]
    error = (together[200] - reference).norm() / reference.norm()
    assert error < 1e-2, error


# Packed weights (weights.py) under the runtime's tiles and tilings with K splits, runs and 16-row tiles.
PACKED = [(kind, replace(t, packed=True, prefetch=0)) for kind, t in
          [*((k, t) for k, t in CHOSEN if k != "argmax"), ("norm", TILINGS[0]), ("gated", TILINGS[6]),
           ("plain", TILINGS[10]), ("norm", TILINGS[12])]]


@pytest.mark.parametrize("kind, tiles", PACKED, ids=[f"{kind}-{t}" for kind, t in PACKED])
def test_a_packed_weight_gives_the_bits_of_the_row_major_one(tensors, tiles, kind):
    """Issue 26: a weight kept in its tiles' blocks moves where values are loaded from, never
    which are multiplied or in what order: a one-token step, a 63-node tree and a prompt get
    the row-major weight's bits."""
    x, w = tensors["x"], tensors["w"] if kind == "gated" else tensors["w"][:N]
    if kind == "plain":
        x = x.bfloat16()

    def project(weight, count: int) -> torch.Tensor:
        rows = x[:count]
        if kind == "norm":
            return kernels.linear(rows, weight, bias=tensors["bias"], norm=tensors["norm"], eps=1e-5)
        if kind == "gated":
            return kernels.linear(rows, weight, norm=tensors["norm"], eps=1e-5, gated=True)
        return kernels.linear(rows, weight, residual=tensors["res"][:count].clone())

    with kernels.tile_table({(kind, N, K): tiles}):
        packed = kernels.pack_for_tiles(w, kind)
        assert isinstance(packed, PackedWeight)
        for count in (1, 64, 200):
            assert torch.equal(project(packed, count), project(w, count)), count


@pytest.mark.parametrize("tiles", TILINGS + [t for kind, t in CHOSEN if kind == "argmax"], ids=str)
def test_greedy_tokens_of_a_tree_equal_each_row_alone(tensors, tiles):
    x, vocab = tensors["x"], tensors["vocab"]
    with kernels.tile_table({("argmax", vocab.shape[0], K): tiles}):
        together = kernels.greedy_tokens(x[:64], vocab, norm=tensors["norm"], eps=1e-5)
        alone = torch.cat([kernels.greedy_tokens(x[i:i + 1], vocab, norm=tensors["norm"], eps=1e-5)
                           for i in range(64)])
    assert torch.equal(together, alone)


def test_a_bfloat16_input_gives_the_bits_of_its_float32_source(tensors):
    """The o and down projections take their inputs in the weight's dtype (issue 26): that must
    change no bit of what they compute from the float32 values."""
    x, w, res = tensors["x"], tensors["w"][:N], tensors["res"]
    for tiles in TILINGS:
        with kernels.tile_table({("plain", N, K): tiles}):
            assert torch.equal(kernels.linear(x.bfloat16(), w, residual=res.clone()),
                               kernels.linear(x, w, residual=res.clone())), tiles


@pytest.mark.parametrize("tiles", [LinearTiles(64, 64, 4, 4, 1, 64, 2, prefetch=2), *LARGE_WEIGHT_TILES.values()],
                         ids=str)
def test_dependent_launches_change_no_bit(tensors, tiles, monkeypatch):
    """Programmatic dependent launches (where the GPU has them) let a projection start while the
    one before it finishes; it must still read that one's output, in a CUDA graph too."""
    if not kernels.dependent_launches(torch.device("cuda")):
        pytest.skip("this GPU has no programmatic dependent launches")
    x, w, res = tensors["x"][:64], tensors["w"][:N], tensors["res"][:64]
    square = (torch.randn(K, N, device="cuda") * 0.02).bfloat16()  # N -> K, so projections chain

    def chain() -> torch.Tensor:
        h = kernels.linear(x, w, residual=res.clone())
        for _ in range(4):
            h = kernels.linear(kernels.linear(h, square, out_dtype=torch.bfloat16), w, residual=h)
        return h

    with kernels.tile_table({("plain", N, K): tiles, ("plain", K, N): tiles}):
        monkeypatch.setattr(kernels, "DEPENDENT_LAUNCHES", False)
        expected = chain()
        monkeypatch.setattr(kernels, "DEPENDENT_LAUNCHES", True)
        assert torch.equal(chain(), expected)
        chain()  # compiled and its K-split counters made outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            graphed = chain()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(graphed, expected)
