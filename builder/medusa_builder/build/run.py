"""The build steps' work: look the cache key up, fetch and inspect the sources, resolve the tree,
build (TensorRT-LLM or the reference bundle) and publish the entry, manifest last.

``build_from_sources`` is the operator's Building Job (``medusa-builder build``);
``build_from_folders`` builds from local folders (``medusa-builder build-engine``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medusa_common import checkpoint
from medusa_common.contract import UserError
from medusa_common.engine_key import EngineInputs
from medusa_common.tree import (AUTO_PRESET, DEFAULT_TREE_NODES, REFERENCE_DRAFT_VOCAB, REFERENCE_TREE_NODES,
                                normalise_tree, parse_choices, resolve_tree)

from .. import storage
from . import entry as cache_entry
from .key import check_cache_key, engine_inputs
from .reference import build_reference_entry
from .spec import EngineSpec
from .trtllm import build_trtllm_entry, check_trtllm_toolchain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TreeRequest:
    """The tree as asked for: a preset name (``auto`` calibrates one) or explicit JSON choices,
    and the head and layer counts the heads must have (None: any)."""

    preset: str | None = None
    choices: str | None = None
    num_heads: int | None = None
    num_layers: int | None = None


@dataclass(frozen=True)
class BuildOptions:
    """How to build and where to keep the entry (the flags build and build-engine share)."""

    spec: EngineSpec
    tree: TreeRequest = TreeRequest()
    artifacts_uri: str | None = None
    cache_key: str | None = None
    work_dir: str = "/tmp/medusa-build"
    examples_dir: str | None = None
    calib_dataset: str | None = None
    dry_run: bool = False
    print_commands: bool = True  # a dry run prints its commands on stdout (not when the result is printed as JSON)
    storage: storage.StorageSettings = field(default_factory=storage.StorageSettings)


@dataclass(frozen=True)
class Sources:
    """Where the base model and heads come from (``build``); no heads for a base-only build."""

    base_uri: str
    base_revision: str | None = None
    heads_uri: str | None = None
    heads_revision: str | None = None
    base_only: bool = False


def checked_spec(spec: EngineSpec) -> EngineSpec:
    spec.validate()
    if spec.backend == "reference" and (spec.quantization != "none" or spec.tp_size != 1):
        raise UserError("the reference backend runs unquantised on one device; use --quantization none "
                        "and --tp-size 1, or the tensorrt-llm backend")
    return spec


# The preset a key records when no tree is asked for: the default preset for the heads' count.
DEFAULT_TREE_KEY = "default"


def requested_tree(tree: TreeRequest) -> dict[str, Any]:
    """The tree as asked for, as ``engine_inputs`` takes it: explicit choices as given, as the
    operator keys them, once they are checked (here, before any download)."""
    if tree.choices is not None:
        choices = parse_choices(tree.choices)
        normalise_tree(choices, tree.num_heads)
        return {"choices": choices}
    return {"preset": tree.preset or DEFAULT_TREE_KEY}


def trtllm_toolchain(options: BuildOptions) -> str | None:
    """The TensorRT-LLM version a real tensorrt-llm build will use, checked before anything is
    downloaded or built; None for the reference backend and for a dry run (which runs nothing)."""
    if options.spec.backend != "tensorrt-llm" or options.dry_run:
        return None
    return check_trtllm_toolchain()


def reference_draft_vocab(heads_dir: str | Path, vocab_size: int) -> int | None:
    """The draft vocabulary `auto` gives the reference backend: ``REFERENCE_DRAFT_VOCAB`` tokens when
    the heads recorded their training's token counts (heads from train-heads do) and the model's
    vocabulary is larger; otherwise None, the whole vocabulary."""
    from medusa_runtime.engine.heads import TOKEN_COUNTS_FILE

    if vocab_size > REFERENCE_DRAFT_VOCAB and (Path(heads_dir) / TOKEN_COUNTS_FILE).is_file():
        return REFERENCE_DRAFT_VOCAB
    return None


def resolve_build_tree(request: TreeRequest, base_dir: str | Path, heads_dir: str | Path, report: dict[str, Any],
                       spec: EngineSpec) -> tuple[list[list[int]], dict[str, Any]]:
    """The tree to build with (``report`` is ``checkpoint.inspect``'s), and calibration details
    when the preset is 'auto': the expected tokens per step and, for the reference backend, the
    draft vocabulary the tree was calibrated for (the packaged model decodes with it)."""
    num_heads = report["numHeads"]
    if request.preset == AUTO_PRESET:
        from medusa_runtime.tuning.calibrate import calibrate_tree

        reference = spec.backend == "reference"
        nodes = REFERENCE_TREE_NODES if reference else DEFAULT_TREE_NODES
        draft = reference_draft_vocab(heads_dir, report["base"]["vocabSize"]) if reference else None
        log.info("calibrating a %d-node tree from where the heads rank the base model's tokens", nodes)
        calibration = calibrate_tree(str(base_dir), str(heads_dir), num_nodes=nodes, dtype=spec.dtype,
                                     draft_vocab=draft)
        tree = normalise_tree(calibration["tree"], num_heads)
        extra = {"expectedAcceptedTokens": calibration.get("expectedAcceptedTokens")}
        if "draftVocabulary" in calibration:
            extra["draftVocabulary"] = calibration["draftVocabulary"]
        return tree, extra
    choices = parse_choices(request.choices) if request.choices is not None else None
    return resolve_tree(request.preset, choices, num_heads), {}


def cached_result(options: BuildOptions, key: str) -> dict[str, Any] | None:
    """The step result for an engine already in the store, or None when it must be built."""
    if options.artifacts_uri:
        manifest = cache_entry.lookup(options.artifacts_uri, key)
        if manifest is not None:
            uri = cache_entry.entry_uri(options.artifacts_uri, key)
            log.info("cache hit: %s; nothing to build", uri)
            return cache_entry.result_from_manifest(manifest, uri, cache_hit=True)
    elif not options.dry_run:
        raise UserError("--artifacts-uri is required to store the engine (or pass --dry-run)")
    return None


def build_and_publish(options: BuildOptions, *, key: str, base_dir: str | Path, heads_dir: str | Path | None,
                      report: dict[str, Any], tree: list[list[int]], extra: dict[str, Any],
                      sources: dict[str, Any]) -> dict[str, Any]:
    """Cache lookup, build (or plan, for a dry run) and upload; returns the step result."""
    cached = cached_result(options, key)
    if cached is not None:
        return cached
    spec = options.spec
    num_heads, num_layers = report["numHeads"], report["numLayers"]
    work = Path(options.work_dir)
    trtllm_version = trtllm_toolchain(options)
    if spec.backend == "tensorrt-llm":
        entry, commands, seconds = build_trtllm_entry(
            base_dir=base_dir, heads_dir=heads_dir, work_dir=work, spec=spec, tree=tree, num_heads=num_heads,
            num_layers=num_layers, model_type=checkpoint.TRTLLM_MODEL_TYPE.get(report["base"]["family"], "llama"),
            dry_run=options.dry_run, examples_dir=options.examples_dir, calib_dataset=options.calib_dataset)
    else:
        entry, seconds = build_reference_entry(base_dir=base_dir, heads_dir=heads_dir, work_dir=work, tree=tree,
                                               dry_run=options.dry_run)
        commands = []
    command_lines = [c.shell() for c in commands]
    uri = cache_entry.entry_uri(options.artifacts_uri, key) if options.artifacts_uri else None
    if options.dry_run:
        if options.print_commands:
            for line in command_lines:
                print(line)
        return {"cacheKey": key, "cacheHit": False, "engineUri": uri, "dryRun": True, "backend": spec.backend,
                "buildSeconds": 0.0, "numHeads": num_heads, "numLayers": num_layers, "tree": tree,
                "commands": command_lines, **extra}
    manifest = cache_entry.make_manifest(cache_key=key, spec=spec, entry_dir=entry, num_heads=num_heads,
                                         num_layers=num_layers, tree=tree, sources=sources, commands=command_lines,
                                         build_seconds=seconds, extra={"inspection": _short_report(report), **extra},
                                         trtllm_version=trtllm_version)
    uri = cache_entry.publish(entry, options.artifacts_uri, key, manifest)
    log.info("stored %s (%d bytes) in %.1f s", uri, manifest["totalBytes"], seconds)
    return {**cache_entry.result_from_manifest(manifest, uri, cache_hit=False), **extra}


def _short_report(report: dict[str, Any]) -> dict[str, Any]:
    heads, base = report.get("heads") or {}, report["base"]
    return {"layout": heads.get("layout"), "fileFormat": heads.get("fileFormat"), "headsDtype": heads.get("dtype"),
            "family": base["family"], "hiddenSize": base["hiddenSize"], "vocabSize": base["vocabSize"],
            "warnings": report["warnings"]}


def build_from_folders(base_dir: str, heads_dir: str, options: BuildOptions) -> dict[str, Any]:
    """Build from local base and heads folders; the key covers the folders' paths and contents."""
    options.storage.apply()
    spec = checked_spec(options.spec)
    report = checkpoint.inspect(base_dir, heads_dir, expected_heads=options.tree.num_heads,
                                expected_layers=options.tree.num_layers)
    tree, calibration = resolve_build_tree(options.tree, base_dir, heads_dir, report, spec)
    key = check_cache_key(options.cache_key or engine_inputs(
        spec, base_uri=str(Path(base_dir).resolve()), base_revision=storage.folder_fingerprint(base_dir),
        heads_uri=str(Path(heads_dir).resolve()), heads_revision=storage.folder_fingerprint(heads_dir),
        num_heads=options.tree.num_heads, num_layers=options.tree.num_layers, choices=tree).key())
    return build_and_publish(options, key=key, base_dir=base_dir, heads_dir=heads_dir, report=report, tree=tree,
                             extra=calibration, sources={})


def check_sources(sources: Sources, options: BuildOptions) -> None:
    if sources.base_only:
        tree = options.tree
        given = [flag for flag, value in (("--heads-uri", sources.heads_uri), ("--num-heads", tree.num_heads),
                                          ("--num-layers", tree.num_layers), ("--tree-preset", tree.preset),
                                          ("--tree-choices", tree.choices))
                 if value is not None]
        if given:
            raise UserError(f"--base-only builds the base model alone; drop {', '.join(given)}")
    elif not sources.heads_uri:
        raise UserError("--heads-uri is required (or pass --base-only to build the base model alone)")
    for uri in (sources.base_uri, sources.heads_uri, options.artifacts_uri):
        if uri:
            storage.parse_uri(uri)


def sources_inputs(sources: Sources, options: BuildOptions) -> EngineInputs:
    """What a build from sources is keyed by when it is given no ``--cache-key``."""
    if sources.base_only:
        return engine_inputs(options.spec, base_uri=sources.base_uri, base_revision=sources.base_revision)
    tree = options.tree
    return engine_inputs(options.spec, base_uri=sources.base_uri, base_revision=sources.base_revision,
                         heads_uri=sources.heads_uri, heads_revision=sources.heads_revision, num_heads=tree.num_heads,
                         num_layers=tree.num_layers, **requested_tree(tree))


def sources_key(sources: Sources, options: BuildOptions) -> str:
    """The baseline's key for a base-only build (the key the operator gives it), else the key of
    the engine with these heads and this tree."""
    inputs = sources_inputs(sources, options)
    return inputs.baseline_key() if sources.base_only else inputs.key()


def build_from_sources(sources: Sources, options: BuildOptions, *, lookup_only: bool = False) -> dict[str, Any]:
    """Look the engine up and, on a miss, download, inspect and build it. ``lookup_only`` stops
    after the lookup (the operator's CPU-only Job), refusing first a builder image that could not
    build the engine on a miss."""
    options.storage.apply()
    spec = checked_spec(options.spec)
    check_sources(sources, options)
    if options.artifacts_uri and storage.parse_uri(options.artifacts_uri).scheme == "hf":
        raise UserError("the artifact store cannot be a Hugging Face location; use s3://, gs://, pvc:// or a path")
    key = check_cache_key(options.cache_key or sources_key(sources, options))
    if lookup_only and not options.artifacts_uri:
        raise UserError("--lookup-only needs --artifacts-uri, the store to look the engine up in")
    cached = cached_result(options, key)
    if cached is not None:
        return cached
    # A miss means a build: refuse a builder image that cannot build it now, in the CPU-only
    # lookup Job, before a GPU is held or a byte is downloaded.
    trtllm_toolchain(options)
    if lookup_only:
        log.info("cache miss: %s is not in %s", key, options.artifacts_uri)
        return {"cacheKey": key, "cacheHit": False}
    work = Path(options.work_dir)
    base_dir = work / "sources" / "base"
    base = storage.download(sources.base_uri, base_dir, revision=sources.base_revision)
    fetched = {"base": {"uri": sources.base_uri, "revision": base["revision"], "bytes": base["bytes"]}}
    if sources.base_only:
        report = checkpoint.inspect_base(base_dir)
        return build_and_publish(options, key=key, base_dir=base_dir, heads_dir=None, report=report, tree=[],
                                 extra={"baseOnly": True}, sources=fetched)
    heads_dir = work / "sources" / "heads"
    heads = storage.download(sources.heads_uri, heads_dir, revision=sources.heads_revision)
    fetched["heads"] = {"uri": sources.heads_uri, "revision": heads["revision"], "bytes": heads["bytes"]}
    tree = options.tree
    report = checkpoint.inspect(base_dir, heads_dir, expected_heads=tree.num_heads, expected_layers=tree.num_layers)
    tree_choices, extra = resolve_build_tree(tree, base_dir, heads_dir, report, spec)
    return build_and_publish(options, key=key, base_dir=base_dir, heads_dir=heads_dir, report=report,
                             tree=tree_choices, extra=extra, sources=fetched)
