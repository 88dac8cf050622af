"""Medusa trees: presets, validation and the brace form Triton reads."""

from __future__ import annotations

import json

import pytest

from medusa_builder import cli
from medusa_common.tree import (MAX_TREE_NODES, PRESETS, TreeError, greedy_tree, normalise_tree, resolve_tree,
                                 to_brace_form, tree_depth)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_normalised_tree(name):
    tree = PRESETS[name]
    assert normalise_tree(tree, tree_depth(tree)) == tree
    assert len(tree) <= MAX_TREE_NODES


def test_presets_cover_two_to_five_heads_and_the_common_default():
    assert len(PRESETS["mc_sim_7b_63"]) == 63 and tree_depth(PRESETS["mc_sim_7b_63"]) == 4
    assert sorted(tree_depth(PRESETS[n]) for n in ("medusa2_16", "medusa3_32", "medusa4_48", "medusa5_64")) == [2, 3, 4, 5]
    assert [len(PRESETS[n]) for n in ("medusa2_16", "medusa3_32", "medusa4_48", "medusa5_64")] == [16, 32, 48, 64]


def test_normalise_sorts_and_deduplicates():
    assert normalise_tree([[1], [0, 0], [0], [1], [0, 1]], 2) == [[0], [1], [0, 0], [0, 1]]


@pytest.mark.parametrize("choices, message", [
    ([], "non-empty list"),
    ("[[0]]", "non-empty list"),
    ([[0], []], "non-empty list of top-k indices"),
    ([[0], [-1]], "non-negative integer"),
    ([[0], [0.5]], "non-negative integer"),
    ([[0], [True]], "non-negative integer"),
    ([[0], [1, 0]], "not prefix-closed: path [1, 0] needs its parent [1]"),
    ([[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]], "4 levels deep but the model has 3 head(s)"),
])
def test_invalid_trees_are_refused_with_a_message(choices, message):
    with pytest.raises(TreeError) as caught:
        normalise_tree(choices, 3)
    assert message in str(caught.value)


def test_size_limit():
    # Two levels of 16 ranks (indices stop at 15) hold more nodes than the limit, prefix-closed.
    wide = ([[i] for i in range(16)] + [[i, j] for i in range(16) for j in range(16)])[:MAX_TREE_NODES + 1]
    with pytest.raises(TreeError, match=f"{MAX_TREE_NODES + 1} nodes but at most {MAX_TREE_NODES}"):
        normalise_tree(wide, 2)
    assert len(normalise_tree(wide[:MAX_TREE_NODES], 2)) == MAX_TREE_NODES


def test_resolve_tree_preset_choices_and_defaults():
    assert resolve_tree("mc_sim_7b_63", None, 4) == PRESETS["mc_sim_7b_63"]
    assert resolve_tree(None, "[[0], [0, 0]]", 2) == [[0], [0, 0]]
    assert resolve_tree(None, None, 3) == PRESETS["medusa3_32"]
    assert resolve_tree(None, None, 8) == PRESETS["medusa5_64"]
    with pytest.raises(TreeError, match="either a tree preset or tree choices"):
        resolve_tree("mc_sim_7b_63", [[0]], 4)
    with pytest.raises(TreeError, match="unknown tree preset 'nope'"):
        resolve_tree("nope", None, 4)
    with pytest.raises(TreeError, match="4 levels deep"):
        resolve_tree("mc_sim_7b_63", None, 3)


def test_greedy_tree_follows_expected_contribution():
    accuracy = [[0.9, 0.05], [0.8, 0.1]]
    # [0] 0.9, [0, 0] 0.72, [0, 1] 0.09, [1] 0.05: the three best form the tree.
    assert greedy_tree(accuracy, 3) == [[0], [0, 0], [0, 1]]


def test_greedy_tree_prefers_paths_seen_accepted():
    """Heads that are right together: [0, 0, 0] was accepted far more often than the product of
    accuracies suggests, so observed counts put it ahead of [1] and [0, 1]."""
    accuracy = [[0.6, 0.2], [0.5, 0.2], [0.5, 0.1]]
    assert greedy_tree(accuracy, 3) == [[0], [1], [0, 0]]
    counts = {(0,): 60, (1,): 20, (0, 0): 45, (0, 1): 10, (0, 0, 0): 40, (1, 0): 5}
    assert greedy_tree(accuracy, 3, counts) == [[0], [0, 0], [0, 0, 0]]
    # Paths never seen come after all seen ones, in the order of the product: [0, 1, 0] (0.06)
    # and [1, 0, 0] (0.05) before [1, 1] (0.04) and [0, 0, 1] (0.03).
    tree = greedy_tree(accuracy, 8, counts)
    assert sorted(map(tuple, tree)) == sorted([*counts, (0, 1, 0), (1, 0, 0)])


def test_brace_form():
    assert to_brace_form([[0], [0, 0], [1]]) == "{0}, {0, 0}, {1}"


def run_cli(argv, tmp_path, capsys):
    result_file = tmp_path / "result.json"
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--result", str(result_file)])
    return stop.value.code, json.loads(result_file.read_text()), capsys.readouterr().out


def test_tree_command_prints_brace_form_and_json(tmp_path, capsys):
    code, doc, out = run_cli(["tree", "--num-heads", "2", "--choices", "[[1], [0], [0, 0], [0]]"], tmp_path, capsys)
    assert code == 0
    assert out.strip() == "{0}, {1}, {0, 0}"
    assert doc["result"]["tree"] == [[0], [1], [0, 0]] and doc["result"]["braceForm"] == "{0}, {1}, {0, 0}"
    code, doc, out = run_cli(["tree", "--num-heads", "4", "--preset", "mc_sim_7b_63", "--json"], tmp_path, capsys)
    assert code == 0 and json.loads(out)["size"] == 63


@pytest.mark.parametrize("argv, message", [
    (["--num-heads", "3", "--preset", "mc_sim_7b_63"], "4 levels deep but the model has 3 head(s)"),
    (["--num-heads", "3", "--choices", "[[0], [0, 1"], "not valid JSON"),
    (["--num-heads", "3", "--choices", "[[0, 1]]"], "not prefix-closed"),
    (["--num-heads", "3", "--preset", "bogus"], "unknown tree preset"),
])
def test_tree_command_refuses_with_exit_code_2(tmp_path, capsys, argv, message):
    code, doc, _ = run_cli(["tree", *argv], tmp_path, capsys)
    assert code == 2
    assert doc["ok"] is False and message in doc["error"]["message"]


def test_tree_takes_the_head_count_as_num_heads_and_the_old_spelling_still_works(tmp_path, capsys) -> None:
    """Issue 24: `tree --heads` was a count where every other step's --heads is a folder; the
    count is --num-heads now, and --heads keeps working for a release (with a warning)."""
    _, new, _ = run_cli(["tree", "--num-heads", "3", "--preset", "medusa3_32", "--json"], tmp_path, capsys)
    old_file = tmp_path / "old.json"
    with pytest.raises(SystemExit):
        cli.main(["tree", "--heads", "3", "--preset", "medusa3_32", "--json", "--result", str(old_file)])
    assert json.loads(old_file.read_text()) == new and new["result"]["numHeads"] == 3
    assert "--heads is deprecated" in capsys.readouterr().err
