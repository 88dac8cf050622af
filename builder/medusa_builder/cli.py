"""`medusa-builder`: the commands that run inside the operator's Jobs.

Each subcommand lives in its own module under ``medusa_builder.steps`` and exposes
``register(subparsers)``, which adds a parser whose ``func`` default takes the parsed
arguments and returns a JSON-serialisable dict (the step's result). This module runs the
function, prints progress and errors on stderr, writes the result document and maps error
kinds to exit codes (see ``errors``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from medusa_common.contract import run_step

log = logging.getLogger("medusa_builder")

# Module names under medusa_builder.steps; each registers one or more subcommands.
STEP_MODULES = (
    "fetch",
    "inspect",
    "tree",
    "build_engine",
    "build",
    "package",
    "convert_gguf",
    "train_heads",
    "calibrate",
    "validate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medusa-builder", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level for progress on stderr")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for name in STEP_MODULES:
        try:
            module = importlib.import_module(f"medusa_builder.steps.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"medusa_builder.steps.{name}":
                raise
            continue
        module.register(sub)
    return parser


def add_result_argument(parser: argparse.ArgumentParser) -> None:
    """Every step accepts --result FILE; steps call this when they build their parser."""
    parser.add_argument("--result", metavar="FILE", help="also write the JSON result to FILE")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sys.exit(run_step(args.step, args.func, args))
