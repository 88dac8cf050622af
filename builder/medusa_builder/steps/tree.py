"""`medusa-builder tree`: validate and normalise a Medusa tree, print it as JSON and brace form."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from medusa_common.tree import MAX_TREE_NODES, PRESETS

from ..build.tree import describe_tree
from . import add_flag, add_result_argument

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
    described = describe_tree(args.num_heads, preset=args.preset, choices=args.choices, max_nodes=args.max_nodes)
    log.info("tree: %d nodes, depth %d, fits %d heads", described["size"], described["depth"], args.num_heads)
    if not args.json:
        print(described["braceForm"])
    return described
