"""`medusa-builder tree`: validate and normalise a Medusa tree, print it as JSON and brace form."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from . import add_flag, add_result_argument
from medusa_common.tree import MAX_TREE_NODES, PRESETS, TreeError, normalise_tree, parse_choices, to_brace_form, tree_depth

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tree", help="validate a Medusa tree (medusa_choices)",
        description="Validate and normalise a Medusa tree; prints Triton's brace form (or JSON with --json).")
    add_flag(parser, "--num-heads", "--heads", type=int, required=True, metavar="N",
             help="how many Medusa heads the tree must fit")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--preset", metavar="NAME", help=f"named tree: {', '.join(sorted(PRESETS))}")
    choice.add_argument("--choices", metavar="JSON", help="explicit tree, e.g. '[[0], [0, 0], [1]]'")
    parser.add_argument("--max-nodes", type=int, default=MAX_TREE_NODES, metavar="N",
                        help=f"largest accepted tree (default {MAX_TREE_NODES})")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.num_heads < 1:
        raise TreeError(f"--num-heads must be at least 1, not {args.num_heads}")
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise TreeError(f"unknown tree preset {args.preset!r}; known presets: {', '.join(sorted(PRESETS))}")
        choices = PRESETS[args.preset]
    else:
        choices = parse_choices(args.choices)
    tree = normalise_tree(choices, args.num_heads, max_nodes=args.max_nodes)
    brace = to_brace_form(tree)
    log.info("tree: %d nodes, depth %d, fits %d heads", len(tree), tree_depth(tree), args.num_heads)
    if not args.json:
        print(brace)
    return {"tree": tree, "size": len(tree), "depth": tree_depth(tree), "numHeads": args.num_heads,
            "preset": args.preset, "braceForm": brace}
