"""Checks of the Triton decoding kernels, run on the CPU by Triton's interpreter on a tiny random
Llama: they agree with the torch implementation, a tree node's row equals the same token decoded
alone, the heads' kernels propose what the torch heads do, and Medusa decoding through them
reproduces base greedy decoding.

The interpreter computes a ``tl.dot`` with NumPy's BLAS, which on some processors rounds a row by
its place in the tile, so rows the kernels make bit-identical on a GPU (held to it in tests/gpu)
agree here to float32 rounding (``CPU_ROUNDING``); each such check is shown to fail on a planted
wrong cache slot.

Triton reads ``TRITON_INTERPRET`` when it is first imported, so this file runs in a fresh process
with it set: tests/fixtures/interpreter.py starts it for test_runtime_kernels.py."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from medusa_runtime.engine import decoding
from medusa_runtime.engine.decoding import MedusaDecoder, build_tree_buffers
from medusa_runtime.engine.weights import PackedWeight, dense
from tiny_llama import (PADDED_PROMPT, assert_equal_but_for_cpu_rounding, prefill, prefilled_state, random_heads,
                        tiny_model, tree_and_one_token_rows)

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_runtime_kernels.py with TRITON_INTERPRET=1", allow_module_level=True)

from medusa_runtime.engine import kernels  # noqa: E402  (after the interpreter check)


def test_linear_matches_torch_with_norm_bias_gate_and_residual():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(70, 40, generator=gen)  # more rows than one tile, K not a multiple of the block
    w, bias, norm = torch.randn(48, 40, generator=gen), torch.randn(48, generator=gen), torch.rand(40, generator=gen)
    residual = torch.randn(70, 48, generator=gen)
    normed = torch.nn.functional.rms_norm(x, (40,), norm, 1e-5)
    out = kernels.linear(x, w, bias=bias, norm=norm, eps=1e-5, residual=residual.clone())
    torch.testing.assert_close(out, residual + normed @ w.T + bias, rtol=1e-4, atol=1e-4)
    gated = kernels.linear(x, w, gated=True)
    gate, up = (x @ w.T).chunk(2, dim=-1)
    torch.testing.assert_close(gated, torch.nn.functional.silu(gate) * up, rtol=1e-4, atol=1e-4)


def test_greedy_tokens_pick_the_first_best_column_across_tiles():
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(20, 40, generator=gen), torch.randn(9000, 40, generator=gen)  # wide: several column tiles
    torch.testing.assert_close(kernels.greedy_tokens(x, w), (x @ w.T).argmax(dim=1), rtol=0, atol=0)
    w[8500] = w[100] = w[7000] = x[0] * 50  # a three-way tie in row 0, across tiles
    assert kernels.greedy_tokens(x, w)[0] == 100


@pytest.fixture
def short_chunks(monkeypatch):
    """Key chunks of 16 positions, so a short prompt fills whole chunks that tokens share."""
    monkeypatch.setattr(kernels, "KEY_CHUNK", 16)


def test_kernel_decoding_matches_torch_decoding():
    reference, fast = tiny_model(), tiny_model(kernels=True)
    prompt = [5, 17, 3, 44, 9, 60, 2]
    x_ref, _ = prefill(reference, prompt)
    x_fast, _ = prefill(fast, prompt)
    torch.testing.assert_close(x_fast, x_ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(fast.next_tokens(x_fast), reference.next_tokens(x_ref))


def test_prefill_over_whole_shared_chunks_matches_torch(short_chunks):
    reference, fast = tiny_model(), tiny_model(kernels=True)
    prompt = [(7 * i) % 97 for i in range(45)]  # two whole chunks and part of a third
    x_ref, _ = prefill(reference, prompt)
    x_fast, _ = prefill(fast, prompt)
    torch.testing.assert_close(x_fast, x_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prompt_length", [5, 40])
def test_tree_rows_equal_one_token_steps(short_chunks, prompt_length):
    """Tree rows from a tree step equal the same tokens decoded one at a time, whether the keys
    are all in the chunk the tree reaches into (5) or mostly in whole chunks tokens share (40)."""
    tree, alone = tree_and_one_token_rows(tiny_model(kernels=True), prompt_length)
    assert_equal_but_for_cpu_rounding(tree, alone)


def test_tree_row_check_fails_on_a_wrong_cache_slot(monkeypatch):
    """Issue 19: the rounding tolerance still catches a real error. Planted: tree nodes read the
    cache slot of node [1] where node [0]'s is (node [0] itself, node [0, 1]'s parent). Default
    key chunks: fewer programs to interpret, and the slot is wrong whatever the chunking."""
    attention = kernels.attention

    def sibling_for_parent(q, k_cache, v_cache, positions, committed, ancestors, kv_heads, **options):
        return attention(q, k_cache, v_cache, positions, committed, torch.where(ancestors == 1, 2, ancestors), kv_heads,
                         **options)

    monkeypatch.setattr(kernels, "attention", sibling_for_parent)
    tree, alone = tree_and_one_token_rows(tiny_model(kernels=True), 5)
    assert_equal_but_for_cpu_rounding(tree[0], alone[0])  # the root reads no tree slot: untouched
    with pytest.raises(AssertionError, match="not close"):
        assert_equal_but_for_cpu_rounding(tree, alone)


def test_padded_prefill_changes_nothing(short_chunks):
    """Padding a prompt by repeating its last token (graphed prefills) leaves the next token, the
    heads' features and the cache below its end as an unpadded prefill leaves them."""
    model = tiny_model(kernels=True)
    padded, plain = prefilled_state(model, PADDED_PROMPT, 32), prefilled_state(model, PADDED_PROMPT, 1)
    assert int(plain["n"]) == len(PADDED_PROMPT)
    assert_equal_but_for_cpu_rounding(padded, plain)


def test_padded_prefill_check_fails_on_a_wrong_cache_slot(monkeypatch):
    """Issue 19: the rounding tolerance still catches a real error. Planted: the padding rows
    write their keys and values one slot below the prompt's last token, where the one before it
    belongs (default key chunks, as above)."""
    rope_and_store = kernels.rope_and_store

    def padding_one_slot_low(qkv, cos, sin, positions, slots, *rest):
        repeated = torch.zeros_like(slots, dtype=torch.bool)
        repeated[1:] = slots[1:] == slots[:-1]
        return rope_and_store(qkv, cos, sin, positions, torch.where(repeated, slots - 1, slots), *rest)

    monkeypatch.setattr(kernels, "rope_and_store", padding_one_slot_low)
    model = tiny_model(kernels=True)
    with pytest.raises(AssertionError, match="not close"):
        assert_equal_but_for_cpu_rounding(prefilled_state(model, PADDED_PROMPT, 32),
                                          prefilled_state(model, PADDED_PROMPT, 1))


@pytest.mark.parametrize("output_layer", [False, True])
def test_medusa_through_kernels_equals_base_greedy(output_layer):
    model = tiny_model(kernels=True)
    base = MedusaDecoder(model)
    heads = random_heads(3, output_layer=output_layer, lm_head=model.lm_head)
    medusa = MedusaDecoder(model, heads, [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]])
    accepted = 0
    for prompt in ([1, 2, 3], [40, 41, 7, 8, 90, 12]):
        want, got = base.generate(prompt, 16), medusa.generate(prompt, 16)
        assert got.tokens == want.tokens
        accepted += got.accepted_draft_tokens
    assert accepted > 0  # the tree path was exercised, not only the root


def test_a_step_split_between_its_layers_changes_no_bit(monkeypatch):
    """A step run as two parts (a layer in each) leaves the same tokens and cache as one part."""
    model = tiny_model(kernels=True)
    tree = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]
    heads = random_heads(3, output_layer=True, lm_head=model.lm_head)
    whole = MedusaDecoder(model, heads, tree)  # AHEAD_LAYERS covers both of the tiny model's layers
    monkeypatch.setattr(decoding, "AHEAD_LAYERS", 1)
    split = MedusaDecoder(model, heads, tree)
    assert (whole._ahead_layers, split._ahead_layers) == (2, 1)
    prompt = [40, 41, 7, 8, 90, 12]
    assert whole.generate(prompt, 16).tokens == split.generate(prompt, 16).tokens
    a, b = (next(iter(d._sessions.values())) for d in (whole, split))
    n = int(a.n)
    assert n == int(b.n) and n > len(prompt)
    assert torch.equal(a.cache.k[..., :n, :], b.cache.k[..., :n, :])
    assert torch.equal(a.cache.v[..., :n, :], b.cache.v[..., :n, :])
    assert torch.equal(a.features, b.features)


def test_accept_kernel_matches_the_torch_acceptance():
    model = tiny_model()  # torch decoding; only the acceptance step is compared
    tree = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 1, 0]]
    heads = random_heads(3, layers=1)
    decoder = MedusaDecoder(model, heads, tree)
    size = decoder.tree.size
    gen = torch.Generator().manual_seed(3)
    for trial in range(12):
        candidates = torch.randint(0, 4, (size,), generator=gen)  # few distinct tokens: many matches and ties
        predictions = torch.randint(0, 4, (size,), generator=gen)
        sessions = [decoder._session(64), MedusaDecoder(model, random_heads(3), tree)._session(64)]
        for s in sessions:
            s.n.fill_(10)
            s.cache.k.copy_(torch.randn(s.cache.k.shape, generator=torch.Generator().manual_seed(trial)))
            s.cache.v.copy_(-s.cache.k)
        torch_side, kernel_side = sessions
        decoder._accept(torch_side, candidates, predictions)
        moves = kernels.accept(candidates, predictions, decoder.tree.paths, decoder._path_valid, kernel_side.n,
                               kernel_side.out, kernel_side.root, kernel_side.last, kernel_side.cache.k,
                               kernel_side.cache.v)
        # The moves ride along in the heads' launch, as in a decoding step, and leave its features alone.
        x = torch.randn(size, model.cfg.hidden_size, generator=gen)
        blocks = (heads.res_weight, heads.res_bias)
        features = [torch.zeros(3, model.cfg.hidden_size) for _ in range(2)]
        kernels.head_features(x, kernel_side.last, model.final_norm, model.cfg.rms_norm_eps, *blocks, features[0],
                              moves)
        kernels.head_features(x, kernel_side.last, model.final_norm, model.cfg.rms_norm_eps, *blocks, features[1])
        assert torch.equal(*features)
        for name in ("out", "root", "last", "n"):
            assert torch.equal(getattr(kernel_side, name), getattr(torch_side, name)), (trial, name)
        length = int(torch_side.out[0])
        kept = slice(0, 10 + length + 1)  # the prefix and the accepted path; later slots are scratch
        assert torch.equal(kernel_side.cache.k[:, :, :, kept], torch_side.cache.k[:, :, :, kept])
        assert torch.equal(kernel_side.cache.v[:, :, :, kept], torch_side.cache.v[:, :, :, kept])


@pytest.mark.parametrize("tile_rows", [64, kernels.HEAD_TILE_ROWS])
@pytest.mark.parametrize("draft", [False, True])
@pytest.mark.parametrize("per_head", [False, True])
def test_tree_candidates_take_each_heads_top_k(per_head, draft, tile_rows):
    """With a draft vocabulary the heads rank only its tokens' rows and propose their ids; any
    tile size gives the same proposals."""
    gen = torch.Generator().manual_seed(4)
    heads, vocab, hidden = 3, 700, 40  # several column tiles
    features = torch.randn(heads, hidden, generator=gen)
    weight = torch.randn(heads, vocab, hidden, generator=gen) if per_head else torch.randn(vocab, hidden, generator=gen)
    tokens = torch.randperm(vocab, generator=gen)[:300].sort().values if draft else None
    outputs = kernels.HeadOutputs.quantize(weight, per_head, tokens)
    assert outputs.weight.dtype == torch.int8
    rows = weight.index_select(-2, tokens) if draft else weight
    torch.testing.assert_close(outputs.weight * outputs.scale.unsqueeze(-1), rows, rtol=0, atol=0.02)
    tree = [[0], [1], [2], [3], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 0, 3]]
    tb = build_tree_buffers(tree, torch.device("cpu"))
    dequantized = outputs.weight.float() * outputs.scale.unsqueeze(-1)
    logits = torch.einsum("hk,hvk->hv", features, dequantized) if per_head else features @ dequantized.T
    topk = logits.topk(tb.topk, dim=-1).indices.flatten()
    if draft:
        topk = tokens[topk]
    root = torch.tensor(42)
    tiles_done = torch.zeros(heads, dtype=torch.int32)
    for _ in range(2):  # a launch leaves its finished-tile counters zeroed for the next one
        out = torch.zeros(tb.size, dtype=torch.long)
        kernels.tree_candidates(features, outputs, tb.topk, root, tb.node_head, tb.node_rank, out, bf16=False,
                                tile_rows=tile_rows, tiles_done=tiles_done)
        assert out.tolist() == [42] + topk.index_select(0, tb.candidate_index).tolist()
        assert not tiles_done.any()


@pytest.mark.parametrize("tiles_done", [torch.zeros(2, dtype=torch.int32), torch.zeros(3, dtype=torch.int64)],
                         ids=["too-few", "int64"])
def test_tree_candidates_refuse_unfit_tile_counters(tiles_done):
    tb = build_tree_buffers([[0], [1], [0, 0], [0, 0, 0]], torch.device("cpu"))
    outputs = kernels.HeadOutputs.quantize(torch.randn(3, 200, 16), True)
    out = torch.zeros(tb.size, dtype=torch.long)
    with pytest.raises(ValueError, match="tiles_done must be int32 zeros"):
        kernels.tree_candidates(torch.randn(3, 16), outputs, tb.topk, torch.tensor(7), tb.node_head, tb.node_rank,
                                out, bf16=False, tiles_done=tiles_done)
    assert not out.any()


def test_tree_candidates_prefer_the_lowest_token_among_equal_scores():
    weight = torch.zeros(600, 16)
    weight[[550, 20, 300], 0] = 1.0  # equal best scores in three column tiles
    features = torch.zeros(1, 16)
    features[0, 0] = 1.0
    tb = build_tree_buffers([[0], [1], [2], [3]], torch.device("cpu"))
    out = torch.zeros(tb.size, dtype=torch.long)
    kernels.tree_candidates(features, kernels.HeadOutputs.quantize(weight, False), tb.topk, torch.tensor(7),
                            tb.node_head, tb.node_rank, out, bf16=False)
    assert out.tolist() == [7, 20, 300, 550, 0]


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_head_features_match_the_torch_heads(layers):
    model = tiny_model()
    heads = random_heads(3, layers=layers)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        heads.res_bias.copy_(torch.randn(heads.res_bias.shape, generator=gen))
    x = torch.randn(6, model.cfg.hidden_size, generator=gen) * 3
    last = torch.tensor([4])
    out = torch.zeros(3, model.cfg.hidden_size)
    kernels.head_features(x, last, model.final_norm, model.cfg.rms_norm_eps, heads.res_weight, heads.res_bias, out)
    want = heads.features(model.final_hidden(x[4:5]))[:, 0]
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)


def test_row_tiles_sharing_a_program_change_no_bit():
    """Issue 26: a program that takes up to four 16-row tiles (so a 64-row tree reads each weight
    block once) computes every row as programs of one tile each do, for each projection kind."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(70, 40, generator=gen)  # a fifth, partial tile beyond the first program's four
    w, bias, norm = torch.randn(48, 40, generator=gen), torch.randn(48, generator=gen), torch.rand(40, generator=gen)
    residual, vocab = torch.randn(70, 48, generator=gen), torch.randn(300, 40, generator=gen)
    for block_m, counts in ((16, (1, 2, 4)), (64, (1, 2))):
        results = []
        for row_tiles in counts:
            tiles = kernels.LinearTiles(16, 16, 2, None, row_tiles, block_m)
            table = {(kind, n, 40): tiles for kind, n in (("norm", 48), ("gated", 24), ("plain", 48), ("argmax", 300))}
            with kernels.tile_table(table):
                results.append([kernels.linear(x, w, bias=bias, norm=norm, eps=1e-5),
                                kernels.linear(x, w, norm=norm, eps=1e-5, gated=True),
                                kernels.linear(x, w, residual=residual.clone()),
                                kernels.greedy_tokens(x, vocab, norm=norm, eps=1e-5)])
        for other in results[1:]:
            assert all(torch.equal(a, b) for a, b in zip(results[0], other)), block_m
        torch.testing.assert_close(results[0][2], residual + x @ w.T, rtol=1e-4, atol=1e-4)
        assert torch.equal(results[0][3], (torch.nn.functional.rms_norm(x, (40,), norm, 1e-5) @ vocab.T).argmax(1))


def test_k_splits_give_every_row_the_same_bits_at_any_row_count():
    """Issue 26: a projection may cut K into spans summed apart (more programs for a one-token
    step); the spans depend on the weight alone, so the row tiles sharing a program still change
    no bit, the sums stay those of the whole product, and each launch leaves its counters zeroed."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(70, 40, generator=gen)  # K = 40: three 16-wide K blocks, so spans of 32 and 8
    w, bias, norm = torch.randn(48, 40, generator=gen), torch.randn(48, generator=gen), torch.rand(40, generator=gen)
    residual, vocab = torch.randn(70, 48, generator=gen), torch.randn(300, 40, generator=gen)
    for split, block_m, counts in ((2, 16, (1, 4)), (3, 16, (1, 2)), (2, 64, (1,))):
        results = []
        for row_tiles in counts:
            tiles = kernels.LinearTiles(16, 16, 2, None, row_tiles, block_m, split)
            table = {(kind, n, 40): tiles for kind, n in (("norm", 48), ("gated", 24), ("plain", 48), ("argmax", 300))}
            with kernels.tile_table(table):
                results.append([kernels.linear(x, w, bias=bias, norm=norm, eps=1e-5),
                                kernels.linear(x, w, norm=norm, eps=1e-5, gated=True),
                                kernels.linear(x, w, residual=residual.clone()),
                                kernels.greedy_tokens(x, vocab, norm=norm, eps=1e-5)])
        for other in results[1:]:
            assert all(torch.equal(a, b) for a, b in zip(results[0], other)), (split, block_m)
        normed = torch.nn.functional.rms_norm(x, (40,), norm, 1e-5)
        norm_out, gated, plain, tokens = results[0]
        torch.testing.assert_close(norm_out, normed @ w.T + bias, rtol=1e-4, atol=1e-4)
        gate, up = (normed @ w.T).chunk(2, dim=-1)
        torch.testing.assert_close(gated, torch.nn.functional.silu(gate) * up, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(plain, residual + x @ w.T, rtol=1e-4, atol=1e-4)
        assert torch.equal(tokens, (normed @ vocab.T).argmax(1))
        assert not kernels._split_counters[x.device].any()


def test_runs_of_k_blocks_sum_every_column_tile_whole_at_any_sm_count(monkeypatch):
    """Issue 26 (a plain step near the weight-read floor): a projection may deal its K blocks out
    in equal runs, one a program, so that column tiles which do not divide among the SMs leave
    none idle. A column tile cut by the runs' ends is summed like K splits: where the runs fall as
    a split's spans do, the bits are the split's; at any SM count the sums are the whole
    product's, row tiles sharing a program change no bit, and each launch leaves its counters
    zeroed."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(70, 64, generator=gen)  # K = 64: four 16-wide K blocks
    w, bias, norm = torch.randn(48, 64, generator=gen), torch.randn(48, generator=gen), torch.rand(64, generator=gen)
    residual, vocab = torch.randn(70, 48, generator=gen), torch.randn(300, 64, generator=gen)

    def project(tiles: kernels.LinearTiles) -> list[torch.Tensor]:
        table = {(kind, n, 64): tiles for kind, n in (("norm", 48), ("gated", 24), ("plain", 48), ("argmax", 300))}
        with kernels.tile_table(table):
            return [kernels.linear(x, w, bias=bias, norm=norm, eps=1e-5),
                    kernels.linear(x, w, norm=norm, eps=1e-5, gated=True),
                    kernels.linear(x, w, residual=residual.clone()),
                    kernels.greedy_tokens(x, vocab, norm=norm, eps=1e-5)]

    split = project(kernels.LinearTiles(16, 16, 2, None, 1, 16, 2))
    normed = torch.nn.functional.rms_norm(x, (64,), norm, 1e-5)
    gate, up = (normed @ w.T).chunk(2, dim=-1)
    for sms in (6, 5, 1):
        monkeypatch.setattr(kernels, "_sm_counts", {x.device: sms})
        results = [project(kernels.LinearTiles(16, 16, 2, None, row_tiles, 16, programs_per_sm=1))
                   for row_tiles in (1, 4)]
        if sms == 6:
            # 48 columns x 4 K blocks (24 x 8 gated) over 6 programs: runs of two blocks, the spans
            # of a two-way split.
            assert kernels.linear_launch(48, 64, kernels.LinearTiles(16, 16, 2, None, 1, 16, programs_per_sm=1),
                                         sms).run_blocks == 2
            assert all(torch.equal(a, b) for a, b in zip(split[:3], results[0][:3]))
        assert all(torch.equal(a, b) for a, b in zip(*results)), sms
        norm_out, gated, plain, tokens = results[0]
        torch.testing.assert_close(norm_out, normed @ w.T + bias, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(gated, torch.nn.functional.silu(gate) * up, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(plain, residual + x @ w.T, rtol=1e-4, atol=1e-4)
        assert torch.equal(tokens, (normed @ vocab.T).argmax(1)), sms
        assert not kernels._split_counters[x.device].any()


def test_the_heads_merge_takes_their_tiles_in_chunks(monkeypatch):
    """Issue 26: a whole large vocabulary gives a head thousands of tiles; the merge takes their
    top-k keys a chunk at a time and must pick what one pass over them all would."""
    monkeypatch.setattr(kernels, "MERGE_CHUNK", 16)  # 700 rows in 64-row tiles: 11 tiles x top-4 keys
    gen = torch.Generator().manual_seed(7)
    features, weight = torch.randn(3, 40, generator=gen), torch.randn(3, 700, 40, generator=gen)
    outputs = kernels.HeadOutputs.quantize(weight, True)
    tb = build_tree_buffers([[0], [1], [2], [3], [0, 0], [0, 3], [1, 0], [0, 0, 0], [0, 0, 3]], torch.device("cpu"))
    logits = torch.einsum("hk,hvk->hv", features, outputs.weight.float() * outputs.scale.unsqueeze(-1))
    out = torch.zeros(tb.size, dtype=torch.long)
    kernels.tree_candidates(features, outputs, tb.topk, torch.tensor(42), tb.node_head, tb.node_rank, out,
                            bf16=False, tile_rows=64)
    topk = logits.topk(tb.topk, dim=-1).indices.flatten()
    assert out.tolist() == [42] + topk.index_select(0, tb.candidate_index).tolist()


def test_a_packed_weight_gives_the_bits_of_the_row_major_one():
    """Issue 26 (a plain step near the weight-read floor): a weight kept in blocks, each
    program's in one stretch of memory, changes where values are loaded from and nothing else:
    the same bits for every kind, with K splits, runs and shared row tiles, at edges the blocks
    overhang (48 = 32 + 16 columns, K = 40 = 32 + 8)."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(70, 40, generator=gen)
    w, bias, norm = torch.randn(48, 40, generator=gen), torch.randn(48, generator=gen), torch.rand(40, generator=gen)
    residual, vocab = torch.randn(70, 48, generator=gen), torch.randn(300, 40, generator=gen)
    kinds = {"norm": (48, w), "gated": (24, w), "plain": (48, w), "argmax": (300, vocab)}
    for tiles in (kernels.LinearTiles(32, 32, 2, None, 2, 16), kernels.LinearTiles(32, 16, 2, None, 4, 16, 3),
                  kernels.LinearTiles(32, 16, 2, None, 1, 64, programs_per_sm=1)):
        results = []
        for packed in (False, True):
            table = {(kind, n, 40): dataclasses.replace(tiles, packed=packed) for kind, (n, _) in kinds.items()}
            with kernels.tile_table(table):
                weights = {kind: kernels.pack_for_tiles(weight, kind) for kind, (_, weight) in kinds.items()}
                assert all(isinstance(v, PackedWeight) == packed for v in weights.values())
                results.append([kernels.linear(x, weights["norm"], bias=bias, norm=norm, eps=1e-5),
                                kernels.linear(x, weights["gated"], norm=norm, eps=1e-5, gated=True),
                                kernels.linear(x, weights["plain"], residual=residual.clone()),
                                kernels.greedy_tokens(x, weights["argmax"], norm=norm, eps=1e-5)])
        assert all(torch.equal(a, b) for a, b in zip(*results)), tiles
        normed = torch.nn.functional.rms_norm(x, (40,), norm, 1e-5)
        gate, up = (normed @ w.T).chunk(2, dim=-1)
        torch.testing.assert_close(results[1][1], torch.nn.functional.silu(gate) * up, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(results[1][2], residual + x @ w.T, rtol=1e-4, atol=1e-4)


def test_a_weight_packed_in_other_blocks_is_refused():
    x = torch.randn(3, 40)
    packed = PackedWeight.pack(torch.randn(48, 40), 32, 16, gated=False)
    with kernels.tile_table({("plain", 48, 40): kernels.LinearTiles(16, 16, 2, None, 1, 16, packed=True)}):
        with pytest.raises(ValueError, match="packed in 32x16 blocks .* cannot be read as 16x16 blocks"):
            kernels.linear(x, packed)


def test_a_model_keeps_the_weights_its_tiles_pack_and_decodes_the_same_bits(monkeypatch):
    """The model packs each layer weight whose tiles say so when it is built, decodes the bits
    the row-major weights give, and its torch forward pass (training, calibration) still runs."""
    row_major = tiny_model(kernels=True)
    rule = kernels._rule_tiles
    monkeypatch.setattr(kernels, "_rule_tiles", lambda n, k, kind: dataclasses.replace(rule(n, k, kind), packed=True))
    with kernels.tile_table({}):
        packed = tiny_model(kernels=True)
        assert all(isinstance(layer[name], PackedWeight) for layer in packed.layers
                   for name in ("qkv", "o", "gate_up", "down"))
        assert not isinstance(packed.lm_head, PackedWeight)  # the embedding and the heads read it
        prompt = [5, 17, 3, 44, 9, 60, 2]
        x_packed, _ = prefill(packed, prompt)
    x_row_major, _ = prefill(row_major, prompt)
    assert torch.equal(x_packed, x_row_major)
    # The torch pass multiplies the unpacked weights, the same values in new memory (where a CPU
    # BLAS may pick other kernels, so the results are compared to float32 rounding).
    assert all(torch.equal(dense(a[name]), b[name]) for a, b in zip(packed.layers, row_major.layers)
               for name in ("qkv", "o", "gate_up", "down"))
    tokens = torch.tensor([prompt])
    torch.testing.assert_close(packed.hidden_states(tokens), row_major.hidden_states(tokens), rtol=1e-5, atol=1e-5)
