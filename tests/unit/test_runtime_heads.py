"""Medusa heads: the published checkpoint layouts round-trip through save/load."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from medusa_common.contract import UserError
from medusa_runtime.tuning.calibrate import TOPK, expected_accepted_tokens, path_counts
from medusa_runtime.engine.heads import (
    TOKEN_COUNTS_FILE, MedusaHeads, draft_vocabulary, load_heads, save_heads, save_token_counts,
)
from medusa_runtime.tuning.train import IGNORE, head_losses, target_ranks, teacher_rows, topk_accuracy


def filled_heads(output_layer: bool, num_heads: int = 3, layers: int = 2) -> MedusaHeads:
    heads = MedusaHeads(num_heads, layers, 8, 11, output_layer)
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_(torch.randn(p.shape))
    return heads


@pytest.mark.parametrize("output_layer", [False, True])
def test_save_and_load_round_trip(tmp_path, output_layer):
    heads = filled_heads(output_layer)
    save_heads(heads, tmp_path, base_model="base")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["medusa_num_heads"] == 3 and config["medusa_num_layers"] == 2
    assert ("version" in config) is (not output_layer)
    loaded = load_heads(tmp_path, vocab_size=11)
    assert loaded.num_heads == 3 and loaded.num_layers == 2 and loaded.has_output_layer is output_layer
    hidden, lm_head = torch.randn(4, 8), torch.randn(11, 8)
    torch.testing.assert_close(loaded(hidden, lm_head), heads(hidden, lm_head))


def test_published_tensor_names(tmp_path):
    save_heads(filled_heads(True, num_heads=2, layers=1), tmp_path, base_model="base")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "medusa_lm_head.safetensors"), "pt") as fh:
        names = set(fh.keys())
    assert names == {"0.0.linear.weight", "0.0.linear.bias", "0.1.weight",
                     "1.0.linear.weight", "1.0.linear.bias", "1.1.weight"}


def test_modelopt_prefix_and_pt_files_load(tmp_path):
    heads = filled_heads(False, num_heads=2, layers=1)
    tensors = {f"medusa_heads.{k}": v for k, v in heads.state_dict_published().items()}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    loaded = load_heads(tmp_path, vocab_size=11)
    assert loaded.num_heads == 2
    torch.testing.assert_close(loaded.res_weight, heads.res_weight)
    pt_dir = tmp_path / "pt"
    pt_dir.mkdir()
    torch.save(heads.state_dict_published(), pt_dir / "medusa_lm_head.pt")
    torch.testing.assert_close(load_heads(pt_dir, vocab_size=11).res_bias, heads.res_bias)


def test_residual_block_is_x_plus_silu(tmp_path):
    heads = filled_heads(False, num_heads=1, layers=1)
    x, lm_head = torch.randn(2, 8), torch.randn(11, 8)
    w, b = heads.res_weight[0, 0], heads.res_bias[0, 0]
    expected = (x + torch.nn.functional.silu(x @ w.T + b)) @ lm_head.T
    torch.testing.assert_close(heads(x, lm_head)[0], expected)


def test_missing_heads_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        load_heads(tmp_path / "missing", vocab_size=11)
    with pytest.raises(UserError):
        MedusaHeads.from_published({"something.else": torch.zeros(1)})


def test_expected_accepted_tokens_multiplies_accuracies_along_paths():
    accuracy = [[0.5, 0.2], [0.4, 0.1]]
    # 1 + P([0]) + P([1]) + P([0, 0]) + P([0, 1])
    assert expected_accepted_tokens([[0], [1], [0, 0], [0, 1]], accuracy) == pytest.approx(
        1 + 0.5 + 0.2 + 0.5 * 0.4 + 0.5 * 0.1)


def test_target_ranks_say_where_each_head_put_the_right_token():
    heads = filled_heads(True, num_heads=2, layers=1)
    hidden, lm_head = torch.randn(6, 8), torch.randn(11, 8)
    order = heads(hidden, lm_head).argsort(dim=-1, descending=True)  # [heads, positions, vocab]
    targets = torch.stack([order[0, :, 2], order[1, :, 0]], dim=1)  # head 1's 3rd choice, head 2's 1st
    targets[5, 1] = IGNORE
    ranks = target_ranks(heads, lm_head, hidden, targets, limit=2)
    assert ranks[:, 0].tolist() == [2] * 6  # rank 2 reaches the limit of 2
    assert ranks[:, 1].tolist() == [0] * 5 + [-1]
    assert topk_accuracy(target_ranks(heads, lm_head, hidden, targets, limit=5), 3) == [[0, 0, 1], [1, 0, 0]]


def test_target_ranks_within_a_draft_vocabulary():
    heads = filled_heads(True, num_heads=2, layers=1)
    hidden, lm_head = torch.randn(6, 8), torch.randn(11, 8)
    tokens = torch.tensor([1, 4, 5, 8, 10])
    order = tokens[heads(hidden, lm_head)[..., tokens].argsort(dim=-1, descending=True)]  # draft ids, best first
    targets = torch.stack([order[0, :, 1], torch.full((6,), 3)], dim=1)  # head 2's target is outside the draft
    ranks = target_ranks(heads, lm_head, hidden, targets, limit=4, tokens=tokens)
    assert ranks[:, 0].tolist() == [1] * 6
    assert ranks[:, 1].tolist() == [4] * 6


def test_draft_vocabulary_takes_the_most_counted_tokens_in_id_order(tmp_path):
    save_token_counts(tmp_path, torch.tensor([5, 0, 9, 9, 1, 3, 3]))
    tokens, coverage = draft_vocabulary(tmp_path, 3, vocab_size=7)
    assert tokens.tolist() == [0, 2, 3] and coverage == pytest.approx(23 / 30)
    tokens, _ = draft_vocabulary(tmp_path, 4, vocab_size=7)
    assert tokens.tolist() == [0, 2, 3, 5]  # 5 and 6 tie at 3: the lower id goes in
    for size in (0, 8):
        with pytest.raises(UserError, match="between 1 and 7 tokens"):
            draft_vocabulary(tmp_path, size, vocab_size=7)
    with pytest.raises(UserError, match="another base model"):
        draft_vocabulary(tmp_path, 3, vocab_size=9)
    (tmp_path / TOKEN_COUNTS_FILE).unlink()
    with pytest.raises(UserError, match="only heads trained by train-heads record token counts"):
        draft_vocabulary(tmp_path, 3, vocab_size=7)


def test_path_counts_follow_each_position_until_a_head_misses():
    ranks = torch.tensor([[0, 0, 1], [0, 0, TOPK], [0, 3, -1], [TOPK, 0, 0], [-1, -1, -1]])
    counts = path_counts(ranks)
    assert counts == {(0,): 3, (0, 0): 2, (0, 0, 1): 1, (0, 3): 1}


def test_teacher_rows_point_at_the_position_before_each_target():
    # Two sequences' rows: 0-2 (targets run out) and 3-4.
    targets = torch.tensor([[7, 8], [8, IGNORE], [IGNORE, IGNORE], [5, 6], [6, IGNORE]])
    assert teacher_rows(targets).tolist() == [[1, 2], [2, -1], [-1, -1], [4, 5], [5, -1]]


def test_head_losses_mix_greedy_targets_with_the_base_distribution():
    logits = torch.randn(2, 4, 6, requires_grad=True)  # [heads, B, vocab]
    targets = torch.tensor([[1, 2], [3, IGNORE], [0, IGNORE], [5, IGNORE]])  # [B, heads]
    greedy = head_losses(logits, targets, None, 0.0)
    reference = torch.stack([F.cross_entropy(logits[h], targets[:, h], ignore_index=IGNORE) for h in range(2)])
    assert torch.allclose(greedy, reference)
    one_hot = F.one_hot(targets.T.clamp(min=0), 6).float()
    assert torch.allclose(head_losses(logits, targets, one_hot, 1.0), reference)
    teacher = torch.softmax(torch.randn(2, 4, 6), dim=-1)
    soft = -(teacher * torch.log_softmax(logits, -1)).sum(-1)  # [heads, B]
    expected = torch.stack([(0.25 * reference[0] + 0.75 * soft[0].mean()),
                            0.25 * reference[1] + 0.75 * soft[1, 0]])
    mixed = head_losses(logits, targets, teacher, 0.75)
    assert torch.allclose(mixed, expected)
    mixed.sum().backward()
    assert torch.all(logits.grad[1, 1:] == 0)  # positions without a target carry no loss


def test_a_head_without_targets_contributes_nothing():
    logits = torch.randn(1, 2, 5, requires_grad=True)
    loss = head_losses(logits, torch.full((2, 1), IGNORE), torch.full((1, 2, 5), 0.2), 0.5)
    loss.sum().backward()
    assert loss.tolist() == [0.0] and torch.all(logits.grad == 0)
