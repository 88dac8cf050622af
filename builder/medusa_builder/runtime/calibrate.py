"""Tree calibration: measure each head's top-k accuracy on held-out prompts and grow the tree
that maximises the expected number of accepted tokens per step (the Medusa paper's greedy
construction, ``medusa_builder.tree.greedy_tree``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from ..tree import DEFAULT_TREE_NODES, MAX_TREE_NODES, greedy_tree, normalise_tree
from .heads import load_heads
from .model import LlamaModel, resolve_device
from .text import TextCodec
from .train import greedy_sequences, hidden_and_targets, topk_accuracy

log = logging.getLogger(__name__)

TOPK = 10


def expected_accepted_tokens(tree: Sequence[Sequence[int]], accuracy: Sequence[Sequence[float]]) -> float:
    """1 (the base model's own token) plus each node's chance that its whole path is accepted,
    taking heads as independent."""
    total = 1.0
    for path in tree:
        chance = 1.0
        for depth, rank in enumerate(path):
            chance *= accuracy[depth][rank] if rank < len(accuracy[depth]) else 0.0
        total += chance
    return total


def calibrate_tree(
    base_dir: str | Path,
    heads_dir: str | Path,
    *,
    num_nodes: int = DEFAULT_TREE_NODES,
    prompts: Sequence[str] | None = None,
    device: str = "auto",
    max_new_tokens: int = 128,
    dtype: str = "float32",
) -> dict:
    """Returns ``{"tree", "expectedAcceptedTokens", "topkAccuracy"}`` for these heads."""
    from .prompts import calibration_prompts

    if not 1 <= num_nodes <= MAX_TREE_NODES:
        raise UserError(f"the tree size must be between 1 and {MAX_TREE_NODES} nodes, got {num_nodes}")
    dev = resolve_device(device)
    model = LlamaModel.load(base_dir, dtype=dtype, device=dev)
    heads = load_heads(heads_dir, model.cfg.vocab_size).to(device=dev)
    if heads.hidden_size != model.cfg.hidden_size:
        raise UserError(
            f"the heads expect hidden size {heads.hidden_size} but the base model has {model.cfg.hidden_size}; "
            "they were trained for another base model"
        )
    codec = TextCodec(base_dir)
    prompts = list(prompts) if prompts is not None else calibration_prompts()
    if not prompts:
        raise UserError("calibration needs at least one prompt")
    seqs = greedy_sequences(model, codec, base_dir, prompts, max_new_tokens)
    hidden, targets = hidden_and_targets(model, seqs, heads.num_heads)
    accuracy = topk_accuracy(heads, model.lm_head.float(), hidden, targets, k=TOPK)
    tree = normalise_tree(greedy_tree(accuracy, num_nodes), heads.num_heads)
    expected = expected_accepted_tokens(tree, accuracy)
    log.info("calibrated a %d-node tree on %d positions: %.2f expected tokens per step", len(tree), hidden.shape[0], expected)
    return {
        "tree": tree,
        "expectedAcceptedTokens": round(expected, 4),
        "topkAccuracy": [[round(a, 4) for a in row] for row in accuracy],
    }
