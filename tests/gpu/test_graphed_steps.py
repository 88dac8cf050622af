"""Graphed decoding on a CUDA GPU (skipped without one): the tiny random Llama through the Triton
kernels and CUDA graphs, as a GPU serves it."""

from __future__ import annotations

import pytest
import torch

from medusa_runtime.engine.decoding import MedusaDecoder
from medusa_runtime.engine.model import LlamaModel
from tiny_llama import random_heads, write_tiny_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("tree", [None, [[0], [1], [0, 0], [0, 1], [0, 0, 0]]], ids=["plain", "tree"])
def test_a_request_that_ends_leaves_the_step_after_it_unfinished(tmp_path, tree):
    # Six layers, so a step has layers on both sides of AHEAD_LAYERS.
    model = LlamaModel.load(write_tiny_model(tmp_path / "tiny", layers=6), dtype="bfloat16", device="cuda")
    assert model.kernels
    decoder = MedusaDecoder(model, random_heads(3) if tree else None, tree)
    prompt = [5, 17, 42, 8]
    free = decoder.generate(prompt, 40).tokens
    end = free[12]
    expected = free[: free.index(end)]
    stopped = decoder.generate(prompt, 40, [end])
    torch.cuda.synchronize()
    assert stopped.tokens == expected
    session = next(iter(decoder._sessions.values()))
    # Only the steps the host read moved the cache forward: of the step after them only the part
    # launched ahead ran.
    assert int(session.n) == len(prompt) + sum(a + 1 for a in stopped.accepted_per_step)
    assert decoder.generate(prompt, 40).tokens == free  # the next request runs again
