"""Medusa candidate trees (``medusa_choices``): presets, validation and Triton's brace form.

A tree is a list of paths; each path lists top-k indices, one per head depth: ``[0, 1]`` means
head 1's best token followed by head 2's second best. A valid tree is prefix-closed (every
path's parent is in the tree) and no deeper than the number of heads.
"""

from __future__ import annotations

import heapq
import json
from typing import Any, Mapping, Sequence

from .errors import UserError
from .toolchain import MEDUSA_CHOICE_INDEX_LIMIT

MAX_TREE_NODES = 256
# Calibrated trees default to 63 nodes: the published mc_sim_7b_63 size, and with the root 64
# rows, a multiple of 16, which the reference runtime's kernels run markedly faster than the
# row counts around it.
DEFAULT_TREE_NODES = 63
# What `auto` calibrates for the reference backend: for a small model a tree's extra rows are not
# free, and 31 nodes (32 rows, two full 16-row tiles) gave the best tokens/s; a larger tree costs
# more per step than its extra acceptance returns (docs/benchmarks.md has the step costs).
REFERENCE_TREE_NODES = 31
# And the draft vocabulary it calibrates with when the heads record their training's token counts:
# heads that rank only the 8,192 most frequent tokens read and sort a fraction of the output
# layer for almost the same acceptance; a smaller draft starts to lose accepted tokens, a larger
# one costs more than it gains (docs/benchmarks.md, "With a draft vocabulary").
REFERENCE_DRAFT_VOCAB = 8192
CALIBRATION_METHODS = ("joint", "independent")  # see medusa_builder.runtime.calibrate


class TreeError(UserError):
    """The tree or preset is invalid; the message says what to change."""


# The 63-node tree the Medusa authors tuned on Vicuna-7B; the common default (depth 4).
_MC_SIM_7B_63 = [
    [0], [0, 0], [1], [0, 1], [2], [0, 0, 0], [1, 0], [0, 2], [3], [0, 3], [4], [0, 4], [2, 0],
    [0, 5], [0, 0, 1], [5], [0, 6], [6], [0, 7], [0, 1, 0], [1, 1], [7], [0, 8], [0, 0, 2],
    [3, 0], [0, 9], [8], [9], [1, 0, 0], [0, 2, 0], [1, 2], [0, 0, 3], [4, 0], [2, 1],
    [0, 0, 4], [0, 0, 5], [0, 0, 0, 0], [0, 1, 1], [0, 0, 6], [0, 3, 0], [5, 0], [1, 3],
    [0, 0, 7], [0, 0, 8], [0, 0, 9], [6, 0], [0, 4, 0], [1, 4], [7, 0], [0, 1, 2], [2, 0, 0],
    [3, 1], [2, 2], [8, 0], [0, 5, 0], [1, 5], [1, 0, 1], [0, 2, 1], [9, 0], [0, 6, 0],
    [0, 0, 0, 1], [1, 6], [0, 7, 0],
]

# Assumed top-k accuracies per head depth, shaped like those reported for heads trained on a
# 7B chat model; they only seed the generic presets below (``calibrate`` measures real ones).
_ASSUMED_TOP1 = (0.60, 0.42, 0.32, 0.26, 0.22)
_ASSUMED_TOPK_DECAY = 0.45
_ASSUMED_TOPK = 10


def assumed_topk_accuracy(num_heads: int) -> list[list[float]]:
    """Per-depth accuracy of the k-th candidate, decaying geometrically with k."""
    table = []
    for depth in range(num_heads):
        top1 = _ASSUMED_TOP1[min(depth, len(_ASSUMED_TOP1) - 1)]
        table.append([top1 * _ASSUMED_TOPK_DECAY**k for k in range(_ASSUMED_TOPK)])
    return table


def greedy_tree(topk_accuracy: Sequence[Sequence[float]], num_nodes: int,
                path_counts: Mapping[tuple[int, ...], int] | None = None) -> list[list[int]]:
    """Grow a tree node by node, always adding the path with the largest expected contribution.

    A path's contribution is the product of the accuracies of its indices at each depth (the
    Medusa paper's construction). ``topk_accuracy[d][k]`` is head ``d+1``'s chance that its
    k-th token is right. With ``path_counts`` (how many calibration positions each path would
    have accepted), paths are ranked by that count first and the product only orders paths
    seen equally often: heads tend to be right together, which the product cannot know.
    Either key only shrinks as a path grows, so the result is prefix-closed.
    """
    depth_limit = len(topk_accuracy)
    if depth_limit == 0 or num_nodes <= 0:
        return []
    counts = path_counts or {}
    chosen: list[list[int]] = []
    # Min-heap of ((-count, -probability), path); start with every top-k index of head 1.
    frontier = [((-counts.get((k,), 0), -p), (k,)) for k, p in enumerate(topk_accuracy[0])]
    heapq.heapify(frontier)
    while frontier and len(chosen) < num_nodes:
        (_, neg_p), path = heapq.heappop(frontier)
        chosen.append(list(path))
        depth = len(path)
        if depth < depth_limit:
            for k, p in enumerate(topk_accuracy[depth]):
                child = path + (k,)
                heapq.heappush(frontier, ((-counts.get(child, 0), neg_p * p), child))
    return sort_tree(chosen)


def sort_tree(tree: Sequence[Sequence[int]]) -> list[list[int]]:
    """Shallow paths first, then lexicographic: the order TensorRT-LLM and Medusa expect."""
    return sorted((list(p) for p in tree), key=lambda p: (len(p), p))


PRESETS: dict[str, list[list[int]]] = {
    "mc_sim_7b_63": sort_tree(_MC_SIM_7B_63),
    "medusa2_16": greedy_tree(assumed_topk_accuracy(2), 16),
    "medusa3_32": greedy_tree(assumed_topk_accuracy(3), 32),
    "medusa4_48": greedy_tree(assumed_topk_accuracy(4), 48),
    "medusa5_64": greedy_tree(assumed_topk_accuracy(5), 64),
}

# The preset used when neither a preset nor choices are given, by head count (5 or more: the last).
_DEFAULT_PRESET_BY_HEADS = {2: "medusa2_16", 3: "medusa3_32", 4: "mc_sim_7b_63", 5: "medusa5_64"}


def tree_depth(tree: Sequence[Sequence[int]]) -> int:
    return max((len(p) for p in tree), default=0)


def default_preset(num_heads: int) -> str:
    """The preset for a head count: the deepest generic preset the heads can carry."""
    if num_heads < 2:
        raise TreeError(f"no preset fits {num_heads} head(s); give explicit tree choices such as [[0], [1], [2]]")
    return _DEFAULT_PRESET_BY_HEADS[min(num_heads, 5)]


def parse_choices(text: str) -> Any:
    """Parse a JSON tree given on the command line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TreeError(f"tree choices are not valid JSON ({exc.msg} at character {exc.pos}); "
                        "write them like [[0], [0, 0], [1]]") from None


def normalise_tree(choices: Any, num_heads: int | None, max_nodes: int = MAX_TREE_NODES) -> list[list[int]]:
    """Validate a tree and return it sorted and without duplicate paths."""
    if not isinstance(choices, (list, tuple)) or not choices:
        raise TreeError("the tree must be a non-empty list of paths, for example [[0], [0, 0], [1]]")
    paths: set[tuple[int, ...]] = set()
    for position, path in enumerate(choices):
        if not isinstance(path, (list, tuple)) or not path:
            raise TreeError(f"tree path #{position + 1} ({json.dumps(path)}) must be a non-empty list of "
                            "top-k indices such as [0, 1]")
        for index in path:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise TreeError(f"tree path {json.dumps(path)} holds {json.dumps(index)}; every index must be "
                                "a non-negative integer")
            if index >= MEDUSA_CHOICE_INDEX_LIMIT:
                raise TreeError(f"tree path {json.dumps(path)} holds {index}; indices must be below "
                                f"{MEDUSA_CHOICE_INDEX_LIMIT} (TensorRT-LLM packs each one into 4 bits): use top-k "
                                f"ranks 0 to {MEDUSA_CHOICE_INDEX_LIMIT - 1}")
        paths.add(tuple(path))
    if len(paths) > max_nodes:
        raise TreeError(f"the tree has {len(paths)} nodes but at most {max_nodes} are allowed; use a smaller tree")
    for path in sorted(paths, key=lambda p: (len(p), p)):
        if len(path) > 1 and path[:-1] not in paths:
            raise TreeError(f"the tree is not prefix-closed: path {list(path)} needs its parent {list(path[:-1])}; "
                            "add the parent or remove the path")
    depth = max(len(p) for p in paths)
    if num_heads is not None and depth > num_heads:
        raise TreeError(f"the tree is {depth} levels deep but the model has {num_heads} head(s); "
                        f"use a tree at most {num_heads} deep")
    return sort_tree(paths)


def resolve_tree(preset: str | None, choices: Any, num_heads: int | None) -> list[list[int]]:
    """Turn a preset name or explicit choices (exactly one, or neither for the default) into a tree."""
    if preset and choices is not None:
        raise TreeError("give either a tree preset or tree choices, not both")
    if preset == "auto":
        raise TreeError("the 'auto' tree is calibrated from the heads; run the build or calibrate step for it")
    if choices is not None:
        if isinstance(choices, str):
            choices = parse_choices(choices)
        return normalise_tree(choices, num_heads)
    if not preset:
        if num_heads is None:
            raise TreeError("give a tree preset or tree choices, or the head count to pick a default preset")
        preset = default_preset(num_heads)
    if preset not in PRESETS:
        raise TreeError(f"unknown tree preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}, or auto")
    return normalise_tree(PRESETS[preset], num_heads)


def to_brace_form(tree: Sequence[Sequence[int]]) -> str:
    """Triton's ``medusa_choices`` parameter form: ``{0}, {0, 0}, {1}``."""
    return ", ".join("{" + ", ".join(str(i) for i in path) + "}" for path in tree)
