"""`medusa-builder inspect`: check that a base model and a Medusa head checkpoint fit together."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from medusa_common import checkpoint
from . import add_model_folders, add_result_argument

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect", help="check a base model and Medusa heads",
        description="Detect the head layout, count heads and layers from the tensors and check hidden size, "
                    "vocabulary, dtype and base family. Exit 2 with one sentence per incompatibility.")
    add_model_folders(parser)
    parser.add_argument("--num-heads", type=int, metavar="N", help="expected head count (fails when different)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    report = checkpoint.inspect(args.base_dir, args.heads_dir, expected_heads=args.num_heads)
    heads, base = report["heads"], report["base"]
    log.info("%s heads x %s layers (%s, %s, %s) fit %s (hidden %s, vocabulary %s)", heads["numHeads"],
             heads["numLayers"], heads["layout"], heads["fileFormat"], heads["dtype"], base["family"],
             base["hiddenSize"], base["vocabSize"])
    return report
