"""`medusa-builder build`: the operator's Building Job, from sources to a cached engine.

Looks the cache key up first (a hit downloads nothing), then fetches the base model and heads,
inspects them, resolves the tree (a preset, explicit choices, or ``auto`` calibration) and builds:
a TensorRT-LLM engine for ``--backend tensorrt-llm``, or for ``--backend reference`` the checked
base + heads + tree bundle that the PyTorch reference runtime serves. The entry is stored at
``{artifacts}/engines/{cacheKey}/`` with ``manifest.json`` written last. ``--base-only`` builds
the base model alone (the baseline the operator measures a candidate against).
``--lookup-only`` stops after the cache lookup: the operator runs it as a CPU-only Job first, so
an engine already in the store never waits for a GPU. On a miss, a TensorRT-LLM build first
checks the image's TensorRT-LLM (``engine.check_trtllm_toolchain``): a version that cannot build
Medusa engines, or a missing ``trtllm-build``, is refused (exit 2) before anything else happens.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from medusa_common import checkpoint

from .. import engine, storage
from . import add_result_argument
from medusa_common.contract import UserError
from .build_engine import (add_engine_arguments, build_and_publish, cached_result, check_cache_key,
                           resolve_build_tree, spec_from_args, tree_spec, trtllm_toolchain)

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("build", help="fetch, inspect and build (or reuse) an engine",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--base-uri", required=True, metavar="URI", help="base model location")
    parser.add_argument("--base-revision", metavar="REV", help="pinned base revision")
    parser.add_argument("--heads-uri", metavar="URI", help="Medusa heads location (required unless --base-only)")
    parser.add_argument("--heads-revision", metavar="REV", help="pinned heads revision")
    parser.add_argument("--base-only", action="store_true",
                        help="build the base model alone, without heads (the baseline engine)")
    parser.add_argument("--backend", choices=engine.BACKENDS, default="tensorrt-llm")
    parser.add_argument("--lookup-only", action="store_true",
                        help="only look the engine up in the store: the result says cacheHit true (with the "
                             "engine's details) or false; downloads and builds nothing")
    add_engine_arguments(parser)
    add_result_argument(parser)
    parser.set_defaults(func=run)


def check_sources(args: argparse.Namespace) -> None:
    if args.base_only:
        given = [flag for flag, value in (("--heads-uri", args.heads_uri), ("--num-heads", args.num_heads),
                                          ("--num-layers", args.num_layers), ("--tree-preset", args.tree_preset),
                                          ("--tree-choices", args.tree_choices))
                 if value is not None]
        if given:
            raise UserError(f"--base-only builds the base model alone; drop {', '.join(given)}")
    elif not args.heads_uri:
        raise UserError("--heads-uri is required (or pass --base-only to build the base model alone)")
    for uri in (args.base_uri, args.heads_uri, args.artifacts_uri):
        if uri:
            storage.parse_uri(uri)


def run(args: argparse.Namespace) -> dict[str, Any]:
    storage.apply_storage_arguments(args)
    spec = spec_from_args(args, backend=args.backend)
    check_sources(args)
    if args.artifacts_uri and storage.parse_uri(args.artifacts_uri).scheme == "hf":
        raise UserError("the artifact store cannot be a Hugging Face location; use s3://, gs://, pvc:// or a path")
    key = check_cache_key(args.cache_key or engine.compute_cache_key(engine.cache_inputs(
        spec, base_uri=args.base_uri, base_revision=args.base_revision, heads_uri=args.heads_uri,
        heads_revision=args.heads_revision, tree_spec=None if args.base_only else tree_spec(args))))
    if args.lookup_only and not args.artifacts_uri:
        raise UserError("--lookup-only needs --artifacts-uri, the store to look the engine up in")
    cached = cached_result(args, key)
    if cached is not None:
        return cached
    # A miss means a build: refuse a builder image that cannot build it now, in the CPU-only
    # lookup Job, before a GPU is held or a byte is downloaded.
    trtllm_toolchain(args, spec)
    if args.lookup_only:
        log.info("cache miss: %s is not in %s", key, args.artifacts_uri)
        return {"cacheKey": key, "cacheHit": False}
    work = Path(args.work_dir)
    base_dir = work / "sources" / "base"
    base = storage.download(args.base_uri, base_dir, revision=args.base_revision)
    sources = {"base": {"uri": args.base_uri, "revision": base["revision"], "bytes": base["bytes"]}}
    if args.base_only:
        report = checkpoint.inspect_base(base_dir)
        return build_and_publish(args, spec, key=key, base_dir=base_dir, heads_dir=None, report=report, tree=[],
                                 extra={"baseOnly": True}, sources=sources)
    heads_dir = work / "sources" / "heads"
    heads = storage.download(args.heads_uri, heads_dir, revision=args.heads_revision)
    sources["heads"] = {"uri": args.heads_uri, "revision": heads["revision"], "bytes": heads["bytes"]}
    report = checkpoint.inspect(base_dir, heads_dir, expected_heads=args.num_heads, expected_layers=args.num_layers)
    tree, extra = resolve_build_tree(args, base_dir, heads_dir, report, spec.backend)
    return build_and_publish(args, spec, key=key, base_dir=base_dir, heads_dir=heads_dir, report=report,
                             tree=tree, extra=extra, sources=sources)
