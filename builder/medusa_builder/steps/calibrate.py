"""`medusa-builder calibrate`: measure the heads' top-k accuracy and build the best tree."""

from __future__ import annotations

import argparse
from typing import Any

from medusa_common.tree import CALIBRATION_METHODS, DEFAULT_TREE_NODES, MAX_TREE_NODES, to_brace_form

from ..build.tuning import calibrate
from . import add_model_folders, add_result_argument


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="build the Medusa tree that maximises expected accepted tokens for these heads",
        description="Find where the heads rank the base model's own next tokens on calibration prompts and "
                    "grow, node by node, the tree with the most accepted tokens per step. Prints the tree "
                    "(brace form) and the expected acceptance; the tree is what tree.preset: auto uses.")
    add_model_folders(parser)
    parser.add_argument("--num-nodes", type=int, default=DEFAULT_TREE_NODES, metavar="N",
                        help=f"tree size, 1 to {MAX_TREE_NODES} (default {DEFAULT_TREE_NODES}: with the root, "
                             "a multiple of 16 rows)")
    parser.add_argument("--prompts", metavar="FILE", help="prompt file, one per line (default: the packaged "
                                                          "held-out calibration prompts)")
    parser.add_argument("--max-prompts", type=int, metavar="N", help="use only the first N prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="answer length (default 128)")
    parser.add_argument("--method", default="joint", choices=CALIBRATION_METHODS,
                        help="joint (default): the paths that would have been accepted most often on the "
                             "calibration prompts; independent: the Medusa paper's product of per-head accuracies")
    parser.add_argument("--draft-vocab", type=int, metavar="N",
                        help="heads propose only the N tokens their training saw most (needs heads from "
                             "train-heads; serve with the same N); default or 0: the whole vocabulary")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--output", metavar="FILE", help="also write the calibration (tree, accuracy) as JSON")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of the brace form")
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    result = calibrate(args.base_dir, args.heads_dir, num_nodes=args.num_nodes, prompts_file=args.prompts,
                       max_prompts=args.max_prompts, max_new_tokens=args.max_new_tokens, method=args.method,
                       draft_vocab=args.draft_vocab, device=args.device, output=args.output)
    if not args.json:
        print(to_brace_form(result["tree"]))
        print(f"expected accepted tokens per step: {result['expectedAcceptedTokens']:.3f}")
    return {**result, "numNodes": len(result["tree"]), "braceForm": to_brace_form(result["tree"])}
