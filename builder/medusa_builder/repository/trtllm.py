"""The TensorRT-LLM Triton repository: ``ensemble`` (entry model), ``preprocessing`` and
``postprocessing`` (Python backend, tokenizer) and ``tensorrt_llm`` (the engine, ``decoding_mode:
medusa`` and ``medusa_choices`` unless the entry is the base model's own engine), rendered from
``templates/``."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import jinja2

from medusa_common.contract import UserError
from medusa_common.toolchain import TRTLLM_VERSION
from medusa_common.tree import to_brace_form
from medusa_common.triton import pbtxt_string

from .config import parse_model_config

TEMPLATES = Path(__file__).resolve().parent / "templates"
TOKENIZER_SUBDIR = "1/tokenizer"


@dataclass(frozen=True)
class TrtllmRepositoryOptions:
    max_batch_size: int
    max_input_len: int
    tree: tuple[tuple[int, ...], ...]
    mount_path: str = "/models"
    kv_cache_free_gpu_mem_fraction: float = 0.9
    enable_kv_cache_reuse: bool = False
    decoupled: bool = False
    instance_count: int = 1
    max_queue_delay_us: int = 1000
    add_special_tokens: bool = True
    trtllm_version: str = TRTLLM_VERSION  # the TensorRT-LLM that built the engine (its manifest says)

    def validate(self) -> None:
        if self.max_batch_size < 1:
            raise UserError(f"max batch size must be at least 1, not {self.max_batch_size}")
        if not 0.0 < self.kv_cache_free_gpu_mem_fraction <= 1.0:
            raise UserError(f"the KV-cache memory fraction must be in (0, 1], not {self.kv_cache_free_gpu_mem_fraction}")
        if self.instance_count < 1:
            raise UserError(f"the pre/postprocessing instance count must be at least 1, not {self.instance_count}")
        if not self.mount_path.startswith("/"):
            raise UserError(f"the mount path {self.mount_path!r} must be absolute, like /models")


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["pbstr"] = pbtxt_string
    return env


def render_trtllm_configs(options: TrtllmRepositoryOptions) -> dict[str, str]:
    """Model name -> config.pbtxt text for the four models of the TensorRT-LLM repository."""
    options.validate()
    env = template_environment()
    tokenizer_dir = f"preprocessing/{TOKENIZER_SUBDIR}"
    common = {"max_batch_size": options.max_batch_size}
    return {
        "ensemble": env.get_template("ensemble.pbtxt.j2").render(
            name="ensemble", preprocessing="preprocessing", tensorrt_llm="tensorrt_llm",
            postprocessing="postprocessing", **common),
        "preprocessing": env.get_template("preprocessing.pbtxt.j2").render(
            name="preprocessing", tokenizer_dir=tokenizer_dir, max_input_len=options.max_input_len,
            add_special_tokens=options.add_special_tokens, instance_count=options.instance_count, **common),
        "postprocessing": env.get_template("postprocessing.pbtxt.j2").render(
            name="postprocessing", tokenizer_dir=tokenizer_dir, instance_count=options.instance_count, **common),
        "tensorrt_llm": env.get_template("tensorrt_llm.pbtxt.j2").render(
            name="tensorrt_llm", engine_dir=f"{options.mount_path.rstrip('/')}/tensorrt_llm/1",
            decoupled=options.decoupled, max_queue_delay_us=options.max_queue_delay_us,
            kv_cache_free_gpu_mem_fraction=options.kv_cache_free_gpu_mem_fraction,
            enable_kv_cache_reuse=options.enable_kv_cache_reuse, medusa_choices=to_brace_form(options.tree),
            trtllm_version=options.trtllm_version, **common),
    }


def write_trtllm_repository(out_dir: str | Path, entry_dir: str | Path, options: TrtllmRepositoryOptions) -> list[str]:
    """Lay out the repository: configs, Python models, tokenizer and engine files."""
    out, entry = Path(out_dir), Path(entry_dir)
    engine_files = entry / "engine"
    if not any(engine_files.glob("*.engine")):
        raise UserError(f"the engine entry has no engine files under {engine_files}; rebuild the engine")
    configs = render_trtllm_configs(options)
    for name, text in configs.items():
        parse_model_config(text, f"{name}/config.pbtxt")
        (out / name / "1").mkdir(parents=True, exist_ok=True)
        (out / name / "config.pbtxt").write_text(text, encoding="utf-8")
    for name in ("preprocessing", "postprocessing"):
        shutil.copyfile(TEMPLATES / f"{name}_model.py.tmpl", out / name / "1" / "model.py")
    # Object stores keep no empty folders, but Triton needs the ensemble's version folder.
    (out / "ensemble" / "1" / ".keep").write_text("version 1 of the ensemble has no files of its own\n")
    shutil.copytree(entry / "tokenizer", out / "preprocessing" / TOKENIZER_SUBDIR, dirs_exist_ok=True)
    shutil.copytree(engine_files, out / "tensorrt_llm" / "1", dirs_exist_ok=True)
    return sorted(configs)
