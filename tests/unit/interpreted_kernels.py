"""Checks of the Triton decoding kernels, run on the CPU by Triton's interpreter on a tiny random
Llama: they agree with the torch implementation, a tree node's row is bit-identical to the same
token decoded alone, and Medusa decoding through them reproduces base greedy decoding.

Triton reads ``TRITON_INTERPRET`` when it is first imported, so test_runtime_kernels.py runs
this file in a fresh process with it set."""

from __future__ import annotations

import os

import pytest
import torch

from medusa_builder.runtime.decoding import MedusaDecoder, build_tree_buffers
from tiny_llama import random_heads, tiny_model

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_runtime_kernels.py with TRITON_INTERPRET=1", allow_module_level=True)

from medusa_builder.runtime import kernels  # noqa: E402  (after the interpreter check)


def prefill(model, prompt: list[int], max_len: int = 64):
    cache = model.new_cache(max_len)
    positions = torch.arange(len(prompt))
    first = torch.zeros(len(prompt), 1, dtype=torch.long)
    return model.decode(torch.tensor(prompt), positions, torch.tensor(len(prompt)), first, cache, positions), cache


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


def test_kernel_decoding_matches_torch_decoding():
    reference, fast = tiny_model(), tiny_model(kernels=True)
    prompt = [5, 17, 3, 44, 9, 60, 2]
    x_ref, _ = prefill(reference, prompt)
    x_fast, _ = prefill(fast, prompt)
    torch.testing.assert_close(x_fast, x_ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(fast.next_tokens(x_fast), reference.next_tokens(x_ref))


def test_tree_rows_are_bit_identical_to_one_token_steps():
    model = tiny_model(kernels=True)
    prompt, chain = [5, 17, 3, 44, 9], [11, 12, 13]
    _, cache = prefill(model, prompt)
    alone = []
    for i, token in enumerate(chain):
        n = torch.tensor(len(prompt) + i)
        itself = torch.zeros(1, 1, dtype=torch.long)
        alone.append(model.decode(torch.tensor([token]), n.view(1), n, itself, cache, n.view(1))[0])
    # Sorted nodes: root, [0], [1], [0, 0], [0, 1], [1, 0]; the chain is root -> [0] -> [0, 1],
    # with decoys between its nodes.
    tb = build_tree_buffers([[0], [1], [0, 0], [0, 1], [1, 0]], torch.device("cpu"))
    tokens = torch.tensor([11, 12, 90, 91, 13, 92])
    _, cache = prefill(model, prompt)
    n = torch.tensor(len(prompt))
    tree = model.decode(tokens, n + tb.depths, n, tb.ancestors, cache, n + torch.arange(tb.size))
    for row, single in zip((0, 1, 4), alone):
        assert torch.equal(tree[row], single)


def test_medusa_through_kernels_equals_base_greedy():
    model = tiny_model(kernels=True)
    base = MedusaDecoder(model)
    medusa = MedusaDecoder(model, random_heads(3), [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]])
    accepted = 0
    for prompt in ([1, 2, 3], [40, 41, 7, 8, 90, 12]):
        want, got = base.generate(prompt, 24), medusa.generate(prompt, 24)
        assert got.tokens == want.tokens
        accepted += got.accepted_draft_tokens
    assert accepted > 0  # the tree path was exercised, not only the root


def test_accept_kernel_matches_the_torch_acceptance():
    model = tiny_model()  # torch decoding; only the acceptance step is compared
    tree = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 1, 0]]
    decoder = MedusaDecoder(model, random_heads(3), tree)
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
        kernels.accept(candidates, predictions, decoder.tree.paths, decoder._path_valid, kernel_side.n,
                       kernel_side.out, kernel_side.root, kernel_side.last, kernel_side.cache.k, kernel_side.cache.v)
        for name in ("out", "root", "last", "n"):
            assert torch.equal(getattr(kernel_side, name), getattr(torch_side, name)), (trial, name)
        length = int(torch_side.out[0])
        kept = slice(0, 10 + length + 1)  # the prefix and the accepted path; later slots are scratch
        assert torch.equal(kernel_side.cache.k[:, :, :, kept], torch_side.cache.k[:, :, :, kept])
        assert torch.equal(kernel_side.cache.v[:, :, :, kept], torch_side.cache.v[:, :, :, kept])
