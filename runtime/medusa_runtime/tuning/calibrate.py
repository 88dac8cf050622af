"""Tree calibration: on held-out prompts, find where the heads rank the tokens the base model
goes on to emit, and grow the tree that maximises accepted tokens per step
(``medusa_common.tree.greedy_tree``).

Two methods: ``joint`` (default) counts, for every path, the calibration positions at which it
would have been accepted, and takes the most-counted paths: the tree that would have accepted
the most tokens on those prompts. ``independent`` is the Medusa paper's construction from each
head's top-k accuracy alone, as if the heads were right or wrong independently; they are not
(predictable text makes every head right at once), so it misjudges which deep paths pay."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch

from medusa_common.contract import UserError
from medusa_common.tree import CALIBRATION_METHODS, DEFAULT_TREE_NODES, MAX_TREE_NODES, greedy_tree, normalise_tree
from medusa_runtime.engine.heads import draft_vocabulary, load_heads
from medusa_runtime.engine.model import LlamaModel, resolve_device
from medusa_runtime.engine.text import TextCodec
from medusa_runtime.tuning.train import greedy_sequences, hidden_and_targets, target_ranks, topk_accuracy

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


def path_counts(ranks: torch.Tensor, limit: int = TOPK) -> Counter:
    """For each path of top-k indices, the positions whose targets the heads ranked exactly so:
    the positions at which a tree holding it would accept its whole path."""
    counts: Counter = Counter()
    for row in ranks.tolist():
        path: tuple[int, ...] = ()
        for rank in row:
            if not 0 <= rank < limit:
                break
            path += (rank,)
            counts[path] += 1
    return counts


def calibrate_tree(
    base_dir: str | Path,
    heads_dir: str | Path,
    *,
    num_nodes: int = DEFAULT_TREE_NODES,
    prompts: Sequence[str] | None = None,
    device: str = "auto",
    max_new_tokens: int = 128,
    dtype: str = "float32",
    method: str = "joint",
    draft_vocab: int | None = None,
) -> dict:
    """Returns ``{"tree", "expectedAcceptedTokens", "topkAccuracy", "method", "positions"}`` for
    these heads. With ``joint`` the expectation is what the tree accepts on the calibration
    positions themselves (optimistic by a little on other text). ``draft_vocab``: heads rank
    only the N tokens their training saw most (``heads.draft_vocabulary``); the result then
    also holds ``draftVocabulary`` (its size and the share of training targets it covers)."""
    from medusa_runtime.tuning.prompts import calibration_prompts

    if method not in CALIBRATION_METHODS:
        raise UserError(f"unknown calibration method {method!r}; use {' or '.join(CALIBRATION_METHODS)}")
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
    draft = draft_vocabulary(heads_dir, draft_vocab, model.cfg.vocab_size) if draft_vocab else None
    codec = TextCodec(base_dir)
    prompts = list(prompts) if prompts is not None else calibration_prompts()
    if not prompts:
        raise UserError("calibration needs at least one prompt")
    seqs = greedy_sequences(model, codec, base_dir, prompts, max_new_tokens)
    hidden, targets = hidden_and_targets(model, seqs, heads.num_heads)
    limit = min(TOPK, draft_vocab) if draft else TOPK  # a tree cannot ask for more ranks than there are tokens
    ranks = target_ranks(heads, model.lm_head.float(), hidden, targets, limit=limit,
                         tokens=draft[0] if draft else None)
    accuracy = topk_accuracy(ranks, limit)
    if method == "joint":
        counts = path_counts(ranks, limit)
        tree = normalise_tree(greedy_tree(accuracy, num_nodes, counts), heads.num_heads)
        expected = 1 + sum(counts[tuple(p)] for p in tree) / ranks.shape[0]
    else:
        tree = normalise_tree(greedy_tree(accuracy, num_nodes), heads.num_heads)
        expected = expected_accepted_tokens(tree, accuracy)
    log.info("calibrated a %d-node tree (%s) on %d positions: %.2f expected tokens per step", len(tree), method,
             ranks.shape[0], expected)
    result = {
        "tree": tree,
        "expectedAcceptedTokens": round(expected, 4),
        "topkAccuracy": [[round(a, 4) for a in row] for row in accuracy],
        "method": method,
        "positions": int(ranks.shape[0]),
    }
    if draft:
        result["draftVocabulary"] = {"size": draft_vocab, "trainingCoverage": round(draft[1], 4)}
    return result
