"""TensorRT-LLM engine builds: the exact commands, the engine manifest and the engine cache.

Pinned toolchain: TensorRT-LLM ``TRTLLM_VERSION`` as shipped in the Triton image
``TRITON_TRTLLM_IMAGE`` (the builder image's base, see builder/Dockerfile and toolchain.py).
Engines are not portable across TensorRT-LLM versions or GPU products, so both are part of the
cache key, and a build refuses to start on a TensorRT-LLM that cannot build Medusa engines.

Cache layout in the artifact store: ``{artifacts}/engines/{cacheKey}/`` holds the engine files
(``engine/``, ``tokenizer/``, ``tree.json``) and ``manifest.json``. The manifest is uploaded
last: its presence marks a complete entry, so an interrupted upload is never a cache hit.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from medusa_common import toolchain
from medusa_common.contract import ENGINE_KEY_LENGTH, InfraError, UserError, content_key
from medusa_common.files import link_or_copy
from medusa_common.toolchain import TRITON_TRTLLM_IMAGE, TRTLLM_VERSION
from medusa_common.tree import to_brace_form

from . import storage

log = logging.getLogger(__name__)

EXAMPLES_DIR_ENV = "TRTLLM_EXAMPLES_DIR"
# Where the Triton TensorRT-LLM image keeps the examples of its own TensorRT-LLM (the builder
# image sets $TRTLLM_EXAMPLES_DIR to the folder it checked at build time).
DEFAULT_EXAMPLES_DIR = "/app/examples"
TRTLLM_DISTRIBUTION = "tensorrt_llm"
TRTLLM_BUILD = "trtllm-build"
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
DTYPES = ("float16", "bfloat16")
QUANTIZATIONS = ("none", "fp8")
TP_SIZES = (1, 2, 4, 8)
BACKENDS = ("tensorrt-llm", "reference")
# Output lines that mean the machine, not the input, failed: worth a retry.
_INFRA_MARKERS = ("out of memory", "cuda error", "cudaerror", "nccl", "no space left", "device-side assert",
                  "driver", "ecc error")


@dataclass(frozen=True)
class EngineSpec:
    """Everything that shapes an engine (and therefore its cache key)."""

    backend: str = "tensorrt-llm"
    dtype: str = "float16"
    quantization: str = "none"
    tp_size: int = 1
    max_batch_size: int = 8
    max_input_len: int = 4096
    max_output_len: int = 1024
    gpu_product: str | None = None

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise UserError(f"unsupported dtype {self.dtype!r}; use float16 or bfloat16")
        if self.quantization not in QUANTIZATIONS:
            raise UserError(f"unsupported quantization {self.quantization!r}; use none or fp8")
        if self.tp_size not in TP_SIZES:
            raise UserError(f"tensor parallel size {self.tp_size} is not supported; use 1, 2, 4 or 8")
        for name in ("max_batch_size", "max_input_len", "max_output_len"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")

    @property
    def max_seq_len(self) -> int:
        return self.max_input_len + self.max_output_len


@dataclass(frozen=True)
class Command:
    """One external command of a build, named for logs and errors."""

    name: str
    argv: tuple[str, ...]

    def shell(self) -> str:
        return shlex.join(self.argv)


@dataclass
class BuildPaths:
    base_dir: str
    heads_dir: str  # heads in the converter's layout (see checkpoint.write_converter_heads)
    checkpoint_dir: str
    engine_dir: str
    examples_dir: str = field(default_factory=lambda: os.environ.get(EXAMPLES_DIR_ENV, DEFAULT_EXAMPLES_DIR))
    calib_dataset: str | None = None


def compute_cache_key(inputs: dict[str, Any]) -> str:
    """A stable key over the build inputs (callers add sources, tree and toolchain), made as the
    operator makes its keys."""
    return content_key(inputs, ENGINE_KEY_LENGTH)


def cache_inputs(spec: EngineSpec, *, base_uri: str, base_revision: str | None, heads_uri: str,
                 heads_revision: str | None, tree_spec: Any) -> dict[str, Any]:
    """What the cache key covers when the operator does not pass one."""
    return {
        "base": [base_uri, base_revision], "heads": [heads_uri, heads_revision], "tree": tree_spec,
        "spec": asdict(spec), "tensorrtLlm": TRTLLM_VERSION if spec.backend == "tensorrt-llm" else None,
        "builder": _builder_version(),
    }


def _builder_version() -> str:
    try:
        from importlib.metadata import version

        return version("medusa-operator")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        return "source"


# Base-model converters inside TensorRT-LLM's examples, by converter model type (base-only engines).
BASE_CONVERTERS = {
    "llama": "models/core/llama/convert_checkpoint.py",
    "mixtral": "models/core/llama/convert_checkpoint.py",
    "qwen2": "models/core/qwen/convert_checkpoint.py",
}


def plan_commands(spec: EngineSpec, paths: BuildPaths, *, num_heads: int, num_layers: int, tree_size: int,
                  model_type: str, python: str = "python3") -> list[Command]:
    """The checkpoint conversion (or FP8 quantisation) and ``trtllm-build`` commands, in order.

    ``num_heads == 0`` plans the base model's own engine (the baseline), without Medusa.
    """
    spec.validate()
    examples = paths.examples_dir.rstrip("/")
    medusa = num_heads > 0
    if spec.quantization == "fp8":
        convert = [
            python, f"{examples}/quantization/quantize.py",
            "--model_dir", paths.base_dir,
            "--dtype", spec.dtype,
            "--qformat", "fp8",
            "--kv_cache_dtype", "fp8",
            "--output_dir", paths.checkpoint_dir,
            "--calib_size", "512",
            "--tp_size", str(spec.tp_size),
        ]
        if medusa:
            convert += ["--medusa_model_dir", paths.heads_dir, "--num_medusa_heads", str(num_heads),
                        "--num_medusa_layers", str(num_layers), "--max_draft_len", str(tree_size)]
        if paths.calib_dataset:
            convert += ["--calib_dataset", paths.calib_dataset]
        convert_name = "quantize"
    elif medusa:
        convert = [
            python, f"{examples}/medusa/convert_checkpoint.py",
            "--model_dir", paths.base_dir,
            "--medusa_model_dir", paths.heads_dir,
            "--output_dir", paths.checkpoint_dir,
            "--dtype", spec.dtype,
            "--model_type", model_type,
            "--tp_size", str(spec.tp_size),
            "--workers", str(spec.tp_size),
            "--num_medusa_heads", str(num_heads),
            "--num_medusa_layers", str(num_layers),
            "--max_medusa_token_len", str(tree_size),
        ]
        convert_name = "convert"
    else:
        if model_type not in BASE_CONVERTERS:
            raise UserError(f"no TensorRT-LLM converter for base model type {model_type!r}; "
                            f"supported: {', '.join(sorted(BASE_CONVERTERS))}")
        convert = [
            python, f"{examples}/{BASE_CONVERTERS[model_type]}",
            "--model_dir", paths.base_dir,
            "--output_dir", paths.checkpoint_dir,
            "--dtype", spec.dtype,
            "--tp_size", str(spec.tp_size),
            "--workers", str(spec.tp_size),
        ]
        convert_name = "convert"
    build = [
        TRTLLM_BUILD,
        "--checkpoint_dir", paths.checkpoint_dir,
        "--output_dir", paths.engine_dir,
        "--gemm_plugin", "auto" if spec.quantization == "fp8" else spec.dtype,
    ]
    if medusa:
        build += ["--speculative_decoding_mode", "medusa", "--max_draft_len", str(tree_size)]
    build += [
        "--max_batch_size", str(spec.max_batch_size),
        "--max_input_len", str(spec.max_input_len),
        "--max_seq_len", str(spec.max_seq_len),
        "--use_paged_context_fmha", "enable",
        "--workers", str(spec.tp_size),
    ]
    return [Command(convert_name, tuple(convert)), Command("build", tuple(build))]


def installed_trtllm_version() -> str | None:
    """The version of the tensorrt_llm distribution installed beside this package, read from its
    metadata (importing tensorrt_llm would load CUDA libraries), or None when it is absent."""
    from importlib import metadata

    try:
        return metadata.version(TRTLLM_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def check_trtllm_toolchain() -> str:
    """The installed TensorRT-LLM version, once it is known to build Medusa engines here.

    A wrong builder image is the user's choice (``engine.builderImage``), not a passing failure:
    every refusal is a UserError, so the step is not retried and no GPU build starts.
    """
    version = installed_trtllm_version()
    if version is None:
        raise UserError(f"TensorRT-LLM is not installed in this builder image; build TensorRT-LLM engines with the "
                        f"image of builder/Dockerfile (TensorRT-LLM {TRTLLM_VERSION}, Triton "
                        f"{toolchain.TRITON_TRTLLM_RELEASE}) or use engine.backend: reference")
    if not toolchain.builds_medusa(version):
        raise UserError(f"this builder image's {toolchain.unsupported_version_reason(version)}")
    if shutil.which(TRTLLM_BUILD) is None:
        raise UserError(f"TensorRT-LLM {version} is installed but {TRTLLM_BUILD} is not on PATH in this builder "
                        f"image; use the image of builder/Dockerfile (TensorRT-LLM {TRTLLM_VERSION})")
    return version


def run_command(command: Command, *, log_tail: int = 40) -> float:
    """Run one command, streaming its output to stderr; returns its duration in seconds."""
    log.info("running %s: %s", command.name, command.shell())
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=log_tail)
    try:
        proc = subprocess.Popen(command.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1)
    except FileNotFoundError:
        raise InfraError(f"{command.argv[0]} is not installed in this image; run the build in the builder image "
                         f"(TensorRT-LLM {TRTLLM_VERSION})") from None
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(line)
        tail.append(line.rstrip())
    code = proc.wait()
    if code != 0:
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        text = "\n".join(tail).lower()
        kind = InfraError if any(m in text for m in _INFRA_MARKERS) else UserError
        raise kind(f"{command.name} failed with exit code {code}: {last[:400]}")
    return time.monotonic() - started


def gpu_description() -> dict[str, Any]:
    """Name and compute capability of GPU 0 from nvidia-smi, or empty values when none is visible."""
    if not shutil.which("nvidia-smi"):
        return {"name": None, "computeCapability": None, "count": 0}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {"name": None, "computeCapability": None, "count": 0}
    rows = [[part.strip() for part in line.split(",")] for line in out.strip().splitlines() if line.strip()]
    if not rows:
        return {"name": None, "computeCapability": None, "count": 0}
    return {"name": rows[0][0], "computeCapability": rows[0][1] if len(rows[0]) > 1 else None, "count": len(rows)}


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
                  tree: Sequence[Sequence[int]], sources: dict[str, Any], commands: Sequence[Command],
                  build_seconds: float, extra: dict[str, Any] | None = None,
                  trtllm_version: str | None = None) -> dict[str, Any]:
    """Describe a finished entry: key, versions, GPU, arguments, file sizes and build time.

    ``trtllm_version``: the TensorRT-LLM that built the engine (default: the pinned version)."""
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
            "builder": _builder_version(),
        },
        "gpu": {**gpu, "product": spec.gpu_product},
        "arguments": asdict(spec),
        "sources": sources,
        "numHeads": num_heads,
        "numLayers": num_layers,
        "tree": [list(p) for p in tree],
        "treeSize": len(tree),
        "medusaChoices": to_brace_form(tree),
        "commands": [c.shell() for c in commands],
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


# --- cache entries ---------------------------------------------------------------------------

TOKENIZER_PATTERNS = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
                      "*.model", "generation_config.json", "config.json", "chat_template*")


def copy_tokenizer(base_dir: str | Path, target: str | Path) -> list[str]:
    """Copy the tokenizer files (and config.json, which AutoTokenizer reads) of a base model."""
    source, dest = Path(base_dir), Path(target)
    dest.mkdir(parents=True, exist_ok=True)
    copied = sorted({p.name for pattern in TOKENIZER_PATTERNS for p in source.glob(pattern) if p.is_file()})
    for name in copied:
        shutil.copyfile(source / name, dest / name)
    if not any(n.startswith("tokenizer") for n in copied):
        raise UserError(f"the base model in {source} has no tokenizer files (tokenizer.json or tokenizer.model); "
                        "fetch the complete Hugging Face folder")
    return copied


def write_tree(entry_dir: str | Path, tree: Sequence[Sequence[int]]) -> None:
    doc = {"tree": [list(p) for p in tree], "medusaChoices": to_brace_form(tree)}
    Path(entry_dir, "tree.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")


def build_trtllm_entry(*, base_dir: str | Path, heads_dir: str | Path | None, work_dir: str | Path,
                       spec: EngineSpec,
                       tree: Sequence[Sequence[int]], num_heads: int, num_layers: int, model_type: str,
                       dry_run: bool = False, examples_dir: str | None = None,
                       calib_dataset: str | None = None) -> tuple[Path, list[Command], float]:
    """Prepare converter-ready heads, convert, build; returns the entry folder, commands and seconds.

    ``heads_dir=None`` builds the base model alone. With ``dry_run`` nothing is written or run:
    the commands are only planned.
    """
    from medusa_runtime.engine.checkpoint import write_converter_heads

    work = Path(work_dir)
    entry = work / "entry"
    paths = BuildPaths(base_dir=str(base_dir), heads_dir=str(work / "heads-converter"),
                       checkpoint_dir=str(work / "trtllm-checkpoint"), engine_dir=str(entry / "engine"),
                       calib_dataset=calib_dataset)
    if examples_dir:
        paths.examples_dir = examples_dir
    commands = plan_commands(spec, paths, num_heads=num_heads, num_layers=num_layers, tree_size=len(tree),
                             model_type=model_type)
    if dry_run:
        return entry, commands, 0.0
    started = time.monotonic()
    shutil.rmtree(entry, ignore_errors=True)
    shutil.rmtree(paths.checkpoint_dir, ignore_errors=True)
    if heads_dir is not None:
        log.info("writing converter-ready heads to %s", paths.heads_dir)
        write_converter_heads(heads_dir, base_dir, paths.heads_dir, dtype=spec.dtype)
    for command in commands:
        run_command(command)
    if not any(Path(paths.engine_dir).glob("*.engine")):
        raise UserError(f"trtllm-build finished but wrote no engine files into {paths.engine_dir}")
    copy_tokenizer(base_dir, entry / "tokenizer")
    write_tree(entry, tree)
    shutil.rmtree(paths.checkpoint_dir, ignore_errors=True)
    return entry, commands, time.monotonic() - started


def build_reference_entry(*, base_dir: str | Path, heads_dir: str | Path | None, work_dir: str | Path,
                          tree: Sequence[Sequence[int]], dry_run: bool = False) -> tuple[Path, float]:
    """The reference backend's "engine": the checked base model, heads and tree, side by side
    (the base model alone when ``heads_dir`` is None)."""
    entry = Path(work_dir) / "entry"
    if dry_run:
        return entry, 0.0
    started = time.monotonic()
    shutil.rmtree(entry, ignore_errors=True)
    for name, source in (("base", base_dir), ("heads", heads_dir)):
        if source is None:
            continue
        for rel in storage.local_files(source):
            link_or_copy(Path(source) / rel, entry / name / rel)
    write_tree(entry, tree)
    return entry, time.monotonic() - started
