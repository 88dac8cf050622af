"""Medusa trees as the builder takes them: a preset or explicit choices, checked against the heads."""

from __future__ import annotations

from typing import Any

from medusa_common.tree import (MAX_TREE_NODES, PRESETS, TreeError, normalise_tree, parse_choices, to_brace_form,
                                tree_depth)


def describe_tree(num_heads: int, *, preset: str | None = None, choices: str | None = None,
                  max_nodes: int = MAX_TREE_NODES) -> dict[str, Any]:
    """The normalised tree of a preset name or JSON ``choices`` (one of the two), with its size,
    depth and brace form; a TreeError says why a tree does not fit ``num_heads`` heads."""
    if num_heads < 1:
        raise TreeError(f"--num-heads must be at least 1, not {num_heads}")
    if preset is not None:
        if preset not in PRESETS:
            raise TreeError(f"unknown tree preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}")
        parsed = PRESETS[preset]
    else:
        parsed = parse_choices(choices)
    tree = normalise_tree(parsed, num_heads, max_nodes=max_nodes)
    return {"tree": tree, "size": len(tree), "depth": tree_depth(tree), "numHeads": num_heads,
            "preset": preset, "braceForm": to_brace_form(tree)}
