"""`medusa-builder build-engine`: build a TensorRT-LLM Medusa engine from local folders.

Looks the cache key up in the artifact store first and stops with ``cacheHit: true`` when a
complete entry exists; otherwise prepares the heads, converts, runs ``trtllm-build`` and uploads
the entry (manifest last). ``--dry-run`` prints the exact commands and runs nothing.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from medusa_common import checkpoint

from .. import engine, storage
from . import add_model_folders, add_result_argument
from medusa_common.contract import UserError
from medusa_common.tree import (AUTO_PRESET, DEFAULT_TREE_NODES, PRESETS, REFERENCE_DRAFT_VOCAB, REFERENCE_TREE_NODES, normalise_tree,
                    parse_choices, resolve_tree)

log = logging.getLogger(__name__)

_CACHE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Engine shape, tree and cache flags shared by build-engine and build."""
    tree = parser.add_mutually_exclusive_group()
    tree.add_argument("--tree-preset", metavar="NAME",
                      help=f"named tree ({', '.join(sorted(PRESETS))}) or 'auto' (calibrated from the heads)")
    tree.add_argument("--tree-choices", metavar="JSON", help="explicit tree, e.g. '[[0], [0, 0], [1]]'")
    parser.add_argument("--num-heads", type=int, metavar="N", help="expected head count (fails when different)")
    parser.add_argument("--num-layers", type=int, metavar="N",
                        help="expected residual layers per head (fails when different)")
    parser.add_argument("--dtype", choices=engine.DTYPES, default="float16")
    parser.add_argument("--quantization", choices=engine.QUANTIZATIONS, default="none",
                        help="fp8 quantises the base weights; the heads stay in --dtype")
    parser.add_argument("--tp-size", type=int, choices=engine.TP_SIZES, default=1, help="tensor parallel size")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-input-len", type=int, default=4096)
    parser.add_argument("--max-output-len", type=int, default=1024)
    parser.add_argument("--gpu-product", metavar="NAME", help="GPU product the engine is for (part of the key)")
    parser.add_argument("--artifacts-uri", metavar="URI", help="artifact store holding engines/{cacheKey}/")
    parser.add_argument("--cache-key", metavar="KEY", help="cache key (default: a hash of all inputs)")
    parser.add_argument("--work-dir", metavar="DIR", default="/tmp/medusa-build", help="scratch folder")
    parser.add_argument("--examples-dir", metavar="DIR",
                        help=f"TensorRT-LLM examples folder (default ${engine.EXAMPLES_DIR_ENV} or "
                             f"{engine.DEFAULT_EXAMPLES_DIR})")
    parser.add_argument("--calib-dataset", metavar="PATH", help="calibration dataset for fp8 quantisation")
    parser.add_argument("--dry-run", action="store_true", help="print the commands; build and upload nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    storage.add_storage_arguments(parser)


def spec_from_args(args: argparse.Namespace, backend: str = "tensorrt-llm") -> engine.EngineSpec:
    spec = engine.EngineSpec(backend=backend, dtype=args.dtype, quantization=args.quantization,
                             tp_size=args.tp_size, max_batch_size=args.max_batch_size,
                             max_input_len=args.max_input_len, max_output_len=args.max_output_len,
                             gpu_product=args.gpu_product)
    spec.validate()
    if backend == "reference" and (spec.quantization != "none" or spec.tp_size != 1):
        raise UserError("the reference backend runs unquantised on one device; use --quantization none "
                        "and --tp-size 1, or the tensorrt-llm backend")
    return spec


def tree_spec(args: argparse.Namespace) -> Any:
    """The tree as given (for the cache key); explicit choices are checked here, before any download."""
    if args.tree_choices is not None:
        return {"choices": normalise_tree(parse_choices(args.tree_choices), args.num_heads)}
    return {"preset": args.tree_preset or "default"}


def trtllm_toolchain(args: argparse.Namespace, spec: engine.EngineSpec) -> str | None:
    """The TensorRT-LLM version a real tensorrt-llm build will use, checked before anything is
    downloaded or built; None for the reference backend and for --dry-run (which runs nothing)."""
    if spec.backend != "tensorrt-llm" or args.dry_run:
        return None
    return engine.check_trtllm_toolchain()


def check_cache_key(key: str) -> str:
    if not _CACHE_KEY.match(key):
        raise UserError(f"cache key {key!r} may hold only letters, digits, '.', '_' and '-' (at most 128)")
    return key


def reference_draft_vocab(heads_dir: str | Path, vocab_size: int) -> int | None:
    """The draft vocabulary `auto` gives the reference backend: ``REFERENCE_DRAFT_VOCAB`` tokens when
    the heads recorded their training's token counts (heads from train-heads do) and the model's
    vocabulary is larger; otherwise None, the whole vocabulary."""
    from medusa_runtime.engine.heads import TOKEN_COUNTS_FILE

    if vocab_size > REFERENCE_DRAFT_VOCAB and (Path(heads_dir) / TOKEN_COUNTS_FILE).is_file():
        return REFERENCE_DRAFT_VOCAB
    return None


def resolve_build_tree(args: argparse.Namespace, base_dir: str | Path, heads_dir: str | Path,
                       report: dict[str, Any], backend: str = "tensorrt-llm") -> tuple[list[list[int]], dict[str, Any]]:
    """The tree to build with (``report`` is ``checkpoint.inspect``'s), and calibration details
    when the preset is 'auto': the expected tokens per step and, for the reference backend, the
    draft vocabulary the tree was calibrated for (the packaged model decodes with it)."""
    num_heads = report["numHeads"]
    if args.tree_preset == AUTO_PRESET:
        from medusa_runtime.tuning.calibrate import calibrate_tree

        reference = backend == "reference"
        nodes = REFERENCE_TREE_NODES if reference else DEFAULT_TREE_NODES
        draft = reference_draft_vocab(heads_dir, report["base"]["vocabSize"]) if reference else None
        log.info("calibrating a %d-node tree from where the heads rank the base model's tokens", nodes)
        calibration = calibrate_tree(str(base_dir), str(heads_dir), num_nodes=nodes, dtype=args.dtype,
                                     draft_vocab=draft)
        tree = normalise_tree(calibration["tree"], num_heads)
        extra = {"expectedAcceptedTokens": calibration.get("expectedAcceptedTokens")}
        if "draftVocabulary" in calibration:
            extra["draftVocabulary"] = calibration["draftVocabulary"]
        return tree, extra
    choices = parse_choices(args.tree_choices) if args.tree_choices is not None else None
    return resolve_tree(args.tree_preset, choices, num_heads), {}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-engine", help="build a TensorRT-LLM Medusa engine from local folders",
        description=__doc__.splitlines()[0])
    add_model_folders(parser)
    add_engine_arguments(parser)
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    storage.apply_storage_arguments(args)
    spec = spec_from_args(args)
    report = checkpoint.inspect(args.base_dir, args.heads_dir, expected_heads=args.num_heads,
                                expected_layers=args.num_layers)
    tree, calibration = resolve_build_tree(args, args.base_dir, args.heads_dir, report)
    key = check_cache_key(args.cache_key or engine.compute_cache_key(engine.cache_inputs(
        spec, base_uri=str(Path(args.base_dir).resolve()), base_revision=storage.folder_fingerprint(args.base_dir),
        heads_uri=str(Path(args.heads_dir).resolve()), heads_revision=storage.folder_fingerprint(args.heads_dir),
        tree_spec=tree)))
    return build_and_publish(args, spec, key=key, base_dir=args.base_dir, heads_dir=args.heads_dir,
                             report=report, tree=tree, extra=calibration, sources={})


def cached_result(args: argparse.Namespace, key: str) -> dict[str, Any] | None:
    """The step result for an engine already in the store, or None when it must be built."""
    if args.artifacts_uri:
        manifest = engine.lookup(args.artifacts_uri, key)
        if manifest is not None:
            uri = engine.entry_uri(args.artifacts_uri, key)
            log.info("cache hit: %s; nothing to build", uri)
            return engine.result_from_manifest(manifest, uri, cache_hit=True)
    elif not args.dry_run:
        raise UserError("--artifacts-uri is required to store the engine (or pass --dry-run)")
    return None


def build_and_publish(args: argparse.Namespace, spec: engine.EngineSpec, *, key: str, base_dir: str | Path,
                      heads_dir: str | Path | None, report: dict[str, Any], tree: list[list[int]],
                      extra: dict[str, Any], sources: dict[str, Any]) -> dict[str, Any]:
    """Cache lookup, build (or plan, with --dry-run) and upload; returns the step result."""
    cached = cached_result(args, key)
    if cached is not None:
        return cached
    num_heads, num_layers = report["numHeads"], report["numLayers"]
    work = Path(args.work_dir)
    trtllm_version = trtllm_toolchain(args, spec)
    if spec.backend == "tensorrt-llm":
        entry, commands, seconds = engine.build_trtllm_entry(
            base_dir=base_dir, heads_dir=heads_dir, work_dir=work, spec=spec, tree=tree, num_heads=num_heads,
            num_layers=num_layers, model_type=checkpoint.TRTLLM_MODEL_TYPE.get(report["base"]["family"], "llama"),
            dry_run=args.dry_run, examples_dir=args.examples_dir, calib_dataset=args.calib_dataset)
    else:
        entry, seconds = engine.build_reference_entry(base_dir=base_dir, heads_dir=heads_dir, work_dir=work,
                                                      tree=tree, dry_run=args.dry_run)
        commands = []
    uri = engine.entry_uri(args.artifacts_uri, key) if args.artifacts_uri else None
    if args.dry_run:
        if not args.json:
            for command in commands:
                print(command.shell())
        return {"cacheKey": key, "cacheHit": False, "engineUri": uri, "dryRun": True, "backend": spec.backend,
                "buildSeconds": 0.0, "numHeads": num_heads, "numLayers": num_layers, "tree": tree,
                "commands": [c.shell() for c in commands], **extra}
    manifest = engine.make_manifest(cache_key=key, spec=spec, entry_dir=entry, num_heads=num_heads,
                                    num_layers=num_layers, tree=tree, sources=sources, commands=commands,
                                    build_seconds=seconds, extra={"inspection": _short_report(report), **extra},
                                    trtllm_version=trtllm_version)
    uri = engine.publish(entry, args.artifacts_uri, key, manifest)
    log.info("stored %s (%d bytes) in %.1f s", uri, manifest["totalBytes"], seconds)
    return {**engine.result_from_manifest(manifest, uri, cache_hit=False), **extra}


def _short_report(report: dict[str, Any]) -> dict[str, Any]:
    heads, base = report.get("heads") or {}, report["base"]
    return {"layout": heads.get("layout"), "fileFormat": heads.get("fileFormat"), "headsDtype": heads.get("dtype"),
            "family": base["family"], "hiddenSize": base["hiddenSize"], "vocabSize": base["vocabSize"],
            "warnings": report["warnings"]}
