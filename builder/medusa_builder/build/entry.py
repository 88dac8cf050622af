"""A cache entry in the artifact store: its tree file, its manifest, lookup and upload."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from medusa_common.toolchain import TRITON_TRTLLM_IMAGE, TRTLLM_VERSION
from medusa_common.tree import to_brace_form

from .. import storage
from .host import builder_version, gpu_description
from .spec import EngineSpec

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
TREE_FILE = "tree.json"


def write_tree(entry_dir: str | Path, tree: Sequence[Sequence[int]]) -> None:
    doc = {"tree": [list(p) for p in tree], "medusaChoices": to_brace_form(tree)}
    Path(entry_dir, TREE_FILE).write_text(json.dumps(doc, indent=2), encoding="utf-8")


def entry_uri(artifacts_uri: str, cache_key: str) -> str:
    return storage.join_uri(artifacts_uri, "engines", cache_key)


def lookup(artifacts_uri: str, cache_key: str) -> dict[str, Any] | None:
    """The manifest of a complete cache entry, or None (no entry, or a partial upload)."""
    manifest = storage.read_json(storage.join_uri(entry_uri(artifacts_uri, cache_key), MANIFEST))
    if manifest is None:
        return None
    if manifest.get("cacheKey") != cache_key:
        log.warning("the cache entry %s holds a manifest for %s; rebuilding", cache_key, manifest.get("cacheKey"))
        return None
    return manifest


def make_manifest(*, cache_key: str, spec: EngineSpec, entry_dir: str | Path, num_heads: int, num_layers: int,
                  tree: Sequence[Sequence[int]], sources: dict[str, Any], commands: Sequence[str],
                  build_seconds: float, extra: dict[str, Any] | None = None,
                  trtllm_version: str | None = None) -> dict[str, Any]:
    """Describe a finished entry: key, versions, GPU, arguments, file sizes and build time.

    ``commands``: the build's command lines as run; ``trtllm_version``: the TensorRT-LLM that
    built the engine (default: the pinned version)."""
    files = list(storage.iter_manifest_files(entry_dir))
    gpu = gpu_description()
    trtllm = (trtllm_version or TRTLLM_VERSION) if spec.backend == "tensorrt-llm" else None
    return {
        "schemaVersion": MANIFEST_SCHEMA,
        "cacheKey": cache_key,
        "backend": spec.backend,
        "versions": {
            "tensorrtLlm": trtllm,
            # The Triton image the pinned version comes from; unknown for any other version.
            "image": TRITON_TRTLLM_IMAGE if trtllm == TRTLLM_VERSION else None,
            "builder": builder_version(),
        },
        "gpu": {**gpu, "product": spec.gpu_product},
        "arguments": asdict(spec),
        "sources": sources,
        "numHeads": num_heads,
        "numLayers": num_layers,
        "tree": [list(p) for p in tree],
        "treeSize": len(tree),
        "medusaChoices": to_brace_form(tree),
        "commands": list(commands),
        "files": files,
        "totalBytes": sum(f["size"] for f in files),
        "buildSeconds": round(build_seconds, 3),
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }


def publish(entry_dir: str | Path, artifacts_uri: str, cache_key: str, manifest: dict[str, Any]) -> str:
    """Upload an entry folder, then its manifest; returns the entry's URI."""
    folder = Path(entry_dir)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    uri = entry_uri(artifacts_uri, cache_key)
    storage.upload_dir(folder, uri, last=(MANIFEST,))
    return uri


def result_from_manifest(manifest: dict[str, Any], uri: str, *, cache_hit: bool) -> dict[str, Any]:
    """The build step's result fields, as the operator reads them."""
    return {
        "cacheKey": manifest["cacheKey"],
        "cacheHit": cache_hit,
        "engineUri": uri,
        "backend": manifest.get("backend"),
        "buildSeconds": manifest.get("buildSeconds", 0.0),
        "numHeads": manifest.get("numHeads"),
        "numLayers": manifest.get("numLayers"),
        "tree": manifest.get("tree"),
        "tensorrtLlmVersion": (manifest.get("versions") or {}).get("tensorrtLlm"),
    }
