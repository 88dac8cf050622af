"""The bit identity the Triton kernels promise on a GPU (skipped without one): a tree node's row
equals the same token decoded alone, and a padded prefill changes no bit of what it leaves. In
Triton's CPU interpreter the same checks hold only to float32 rounding
(tests/unit/interpreted_kernels.py)."""

from __future__ import annotations

import pytest
import torch

from tiny_llama import PADDED_PROMPT, prefilled_state, tiny_model, tree_and_one_token_rows

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DTYPES = [torch.bfloat16, torch.float32]  # bfloat16 serves; float32 takes the kernels' IEEE products


@pytest.fixture
def short_chunks(monkeypatch):
    """Key chunks of 16 positions, so a short prompt fills whole chunks that tokens share."""
    from medusa_runtime.engine import kernels

    monkeypatch.setattr(kernels, "KEY_CHUNK", 16)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("prompt_length", [5, 40])
def test_tree_rows_are_bit_identical_to_one_token_steps(short_chunks, dtype, prompt_length):
    tree, alone = tree_and_one_token_rows(tiny_model(kernels=True, dtype=dtype, device="cuda"), prompt_length)
    assert torch.equal(tree, alone)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_padded_prefill_is_bit_identical(short_chunks, dtype):
    model = tiny_model(kernels=True, dtype=dtype, device="cuda")
    padded, plain = prefilled_state(model, PADDED_PROMPT, 32), prefilled_state(model, PADDED_PROMPT, 1)
    assert padded.keys() == plain.keys()
    for name in plain:
        assert torch.equal(padded[name], plain[name]), name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_warming_the_l2_cache_changes_no_bit(short_chunks, monkeypatch, dtype):
    """Issue 26: the programs that ask the L2 cache for a layer's o weight while attention runs
    write nothing: a tree's rows and the one-token rows are those of a model that warms nothing."""
    from medusa_runtime.engine import kernels

    model = tiny_model(kernels=True, dtype=dtype, device="cuda")
    monkeypatch.setattr(kernels, "WARM_L2", True)
    assert kernels._warm_programs(kernels._bytes_to_warm(model.layers[0]["o"], model.device)) > 0
    warmed = tree_and_one_token_rows(model, 40)
    monkeypatch.setattr(kernels, "WARM_L2", False)
    cold = tree_and_one_token_rows(model, 40)
    assert torch.equal(warmed[0], cold[0]) and torch.equal(warmed[1], cold[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tree_tokens", [3, 4])
def test_tokens_taking_turns_in_a_tree_chunk_change_no_bit(short_chunks, monkeypatch, dtype, tree_tokens):
    """Issue 26: attention programs that take several tokens in turn in the chunk past the
    committed keys (3 or 4 of the tree's 6, so the chain's tokens come first, second or last in
    their program) give the bits of one program a token, for a tree and for a padded prefill
    (whose chunks all reach past the committed keys)."""
    from medusa_runtime.engine import kernels

    model = tiny_model(kernels=True, dtype=dtype, device="cuda")
    alone_tree, alone_steps = tree_and_one_token_rows(model, 40)
    alone_prefill = prefilled_state(model, PADDED_PROMPT, 32)
    monkeypatch.setattr(kernels, "TREE_CHUNK_TOKENS", tree_tokens)
    tree, steps = tree_and_one_token_rows(model, 40)
    assert torch.equal(tree, alone_tree) and torch.equal(steps, alone_steps) and torch.equal(tree, steps)
    prefill = prefilled_state(model, PADDED_PROMPT, 32)
    for name in alone_prefill:
        assert torch.equal(prefill[name], alone_prefill[name]), name


def test_rope_with_many_warming_programs_stores_only_its_rows(monkeypatch):
    """The warming programs of a large weight (many programs past the rows) leave the queries,
    the cache and the weight as a launch without them does."""
    from medusa_runtime.engine import kernels

    gen = torch.Generator(device="cuda").manual_seed(3)
    heads, kv_heads, head_dim, rows, slots = 8, 2, 64, 5, 32
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * head_dim, device="cuda", generator=gen)
    angles = torch.rand(slots, head_dim // 2, device="cuda", generator=gen)
    positions = torch.arange(3, 3 + rows, device="cuda")
    weight = torch.randn(4096, 1024, device="cuda", generator=gen).to(torch.bfloat16)  # 8 MiB: 64 programs
    original = weight.clone()

    def run():
        k_cache = torch.zeros(kv_heads, slots, head_dim, device="cuda", dtype=torch.bfloat16)
        v_cache = torch.zeros_like(k_cache)
        q = kernels.rope_and_store(qkv, angles.cos(), angles.sin(), positions, positions + 1, k_cache, v_cache,
                                   heads, kv_heads, head_dim, warm=weight)
        return q, k_cache, v_cache

    monkeypatch.setattr(kernels, "WARM_L2", True)
    assert kernels._warm_programs(kernels._bytes_to_warm(weight, weight.device)) == 64
    warmed = run()
    monkeypatch.setattr(kernels, "WARM_L2", False)
    cold = run()
    for a, b in zip(warmed, cold):
        assert torch.equal(a, b)
    assert cold[1][:, 4:9].any() and not cold[1][:, 9:].any() and not cold[1][:, :4].any()
    assert torch.equal(weight, original)
