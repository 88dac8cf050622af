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
