"""TensorRT-LLM engine builds: the toolchain check, the exact commands and running them.

Pinned toolchain: TensorRT-LLM ``TRTLLM_VERSION`` as shipped in the Triton image
``TRITON_TRTLLM_IMAGE`` (the builder image's base, see builder/Dockerfile and toolchain.py).
Engines are not portable across TensorRT-LLM versions or GPU products, so both are part of the
cache key, and a build refuses to start on a TensorRT-LLM that cannot build Medusa engines.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from medusa_common import toolchain
from medusa_common.contract import InfraError, UserError
from medusa_common.toolchain import TRTLLM_VERSION

from .entry import write_tree
from .spec import EngineSpec

log = logging.getLogger(__name__)

EXAMPLES_DIR_ENV = "TRTLLM_EXAMPLES_DIR"
# Where the Triton TensorRT-LLM image keeps the examples of its own TensorRT-LLM (the builder
# image sets $TRTLLM_EXAMPLES_DIR to the folder it checked at build time).
DEFAULT_EXAMPLES_DIR = "/app/examples"
TRTLLM_DISTRIBUTION = "tensorrt_llm"
TRTLLM_BUILD = "trtllm-build"
# Output lines that mean the machine, not the input, failed: worth a retry.
_INFRA_MARKERS = ("out of memory", "cuda error", "cudaerror", "nccl", "no space left", "device-side assert",
                  "driver", "ecc error")


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
