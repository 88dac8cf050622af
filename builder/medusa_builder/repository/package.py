"""Turn a cached engine entry into a Triton model repository and upload it, ``repository.json``
written last (the work of ``medusa-builder package``).

Every ``config.pbtxt`` is parsed against Triton's model configuration schema before anything is
uploaded.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medusa_common.contract import UserError
from medusa_common.toolchain import TRTLLM_VERSION
from medusa_common.tree import normalise_tree

from .. import storage
from ..build.entry import MANIFEST
from .reference import write_reference
from .trtllm import TrtllmRepositoryOptions, write_trtllm_repository

log = logging.getLogger(__name__)

REPOSITORY_MANIFEST = "repository.json"


@dataclass(frozen=True)
class PackageOptions:
    """What ``package`` is asked to write (its flags); None for max_batch_size: the engine's."""

    engine_uri: str
    output_uri: str
    backend: str = "tensorrt-llm"
    max_batch_size: int | None = None
    kv_cache_free_gpu_mem_fraction: float = 0.9
    enable_kv_cache_reuse: bool = False
    decoupled: bool = False
    instance_count: int = 1
    mount_path: str = "/models"
    device: str = "auto"
    work_dir: str = "/tmp/medusa-package"
    storage: storage.StorageSettings = field(default_factory=storage.StorageSettings)


def package(options: PackageOptions) -> dict[str, Any]:
    """Download the entry, write the repository for its backend and upload it; returns the step result."""
    options.storage.apply()
    storage.parse_uri(options.output_uri)
    manifest = storage.read_json(storage.join_uri(options.engine_uri, MANIFEST))
    if manifest is None:
        raise UserError(f"no complete engine at {options.engine_uri} (manifest.json is missing); build it first")
    built_for = manifest.get("backend")
    if built_for != options.backend:
        raise UserError(f"the engine at {options.engine_uri} was built for the {built_for} backend; package it with "
                        f"--backend {built_for} or rebuild it for {options.backend}")
    base_only = not manifest.get("numHeads")
    tree = [] if base_only else normalise_tree(manifest.get("tree"), manifest.get("numHeads"))
    arguments = manifest.get("arguments") or {}
    max_batch_size = options.max_batch_size or int(arguments.get("max_batch_size", 8))
    work = Path(options.work_dir)
    entry, out = work / "entry", work / "repository"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    storage.download(options.engine_uri, entry)
    if options.backend == "tensorrt-llm":
        repository = TrtllmRepositoryOptions(
            max_batch_size=max_batch_size, max_input_len=int(arguments.get("max_input_len", 4096)),
            tree=tuple(tuple(p) for p in tree), mount_path=options.mount_path,
            kv_cache_free_gpu_mem_fraction=options.kv_cache_free_gpu_mem_fraction,
            enable_kv_cache_reuse=options.enable_kv_cache_reuse, decoupled=options.decoupled,
            instance_count=options.instance_count,
            trtllm_version=(manifest.get("versions") or {}).get("tensorrtLlm") or TRTLLM_VERSION)
        models = write_trtllm_repository(out, entry, repository)
    else:
        models = write_reference(out, entry, tree=None if base_only else tree, max_batch_size=max_batch_size,
                                 device=options.device,
                                 draft_vocab=(manifest.get("draftVocabulary") or {}).get("size"))
    description = {"cacheKey": manifest.get("cacheKey"), "backend": options.backend, "engineUri": options.engine_uri,
                   "models": models, "tree": tree, "medusa": not base_only, "maxBatchSize": max_batch_size}
    (out / REPOSITORY_MANIFEST).write_text(json.dumps(description, indent=2), encoding="utf-8")
    uploaded = storage.upload_dir(out, options.output_uri, last=(REPOSITORY_MANIFEST,))
    log.info("packaged %s as %s (%s)", options.engine_uri, options.output_uri, ", ".join(models))
    return {"repositoryUri": options.output_uri, "backend": options.backend, "cacheKey": manifest.get("cacheKey"),
            "models": models, "files": uploaded["files"], "bytes": uploaded["bytes"]}
