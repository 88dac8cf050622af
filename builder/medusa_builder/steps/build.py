"""`medusa-builder build`: the operator's Building Job, from sources to a cached engine.

Looks the cache key up first (a hit downloads nothing), then fetches the base model and heads,
inspects them, resolves the tree (a preset, explicit choices, or ``auto`` calibration) and builds:
a TensorRT-LLM engine for ``--backend tensorrt-llm``, or for ``--backend reference`` the checked
base + heads + tree bundle that the PyTorch reference runtime serves. The entry is stored at
``{artifacts}/engines/{cacheKey}/`` with ``manifest.json`` written last. ``--base-only`` builds
the base model alone (the baseline the operator measures a candidate against).
``--lookup-only`` stops after the cache lookup: the operator runs it as a CPU-only Job first, so
an engine already in the store never waits for a GPU. On a miss, a TensorRT-LLM build first
checks the image's TensorRT-LLM (``build.trtllm.check_trtllm_toolchain``): a version that cannot
build Medusa engines, or a missing ``trtllm-build``, is refused (exit 2) before anything else happens.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..build.run import Sources, build_from_sources
from ..build.spec import BACKENDS
from . import add_result_argument
from .build_engine import add_engine_arguments, build_options


def register(subparsers) -> None:
    parser = subparsers.add_parser("build", help="fetch, inspect and build (or reuse) an engine",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--base-uri", required=True, metavar="URI", help="base model location")
    parser.add_argument("--base-revision", metavar="REV", help="pinned base revision")
    parser.add_argument("--heads-uri", metavar="URI", help="Medusa heads location (required unless --base-only)")
    parser.add_argument("--heads-revision", metavar="REV", help="pinned heads revision")
    parser.add_argument("--base-only", action="store_true",
                        help="build the base model alone, without heads (the baseline engine)")
    parser.add_argument("--backend", choices=BACKENDS, default="tensorrt-llm")
    parser.add_argument("--lookup-only", action="store_true",
                        help="only look the engine up in the store: the result says cacheHit true (with the "
                             "engine's details) or false; downloads and builds nothing")
    add_engine_arguments(parser)
    add_result_argument(parser)
    parser.set_defaults(func=run)


def sources(args: argparse.Namespace) -> Sources:
    return Sources(base_uri=args.base_uri, base_revision=args.base_revision, heads_uri=args.heads_uri,
                   heads_revision=args.heads_revision, base_only=args.base_only)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return build_from_sources(sources(args), build_options(args, backend=args.backend), lookup_only=args.lookup_only)
