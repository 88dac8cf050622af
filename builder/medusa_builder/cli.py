"""`medusa-builder`: the commands that run inside the operator's Jobs.

Each subcommand lives in its own module under ``medusa_builder.steps``, which adds its parser
(see that package). This module runs the chosen step through ``medusa_common.contract.run_step``,
which writes the result document and maps error kinds to exit codes; progress and errors go to
stderr. The steps never import this module, so the import graph has no cycle.
"""

from __future__ import annotations

import argparse
import logging
import sys

from medusa_common.contract import run_step

from .steps import (build, build_engine, calibrate, convert_gguf, fetch, inspect, package, train_heads, tree,
                    validate)

# In the order `medusa-builder --help` lists them.
STEPS = (fetch, inspect, tree, build_engine, build, package, convert_gguf, train_heads, calibrate, validate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medusa-builder", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level for progress on stderr")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for module in STEPS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sys.exit(run_step(args.step, args.func, args))
