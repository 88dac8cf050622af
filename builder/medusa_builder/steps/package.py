"""`medusa-builder package`: turn a cached engine entry into a Triton model repository.

``--backend tensorrt-llm``: ``ensemble`` (entry model), ``preprocessing`` and ``postprocessing``
(Python backend, tokenizer) and ``tensorrt_llm`` (the engine, ``decoding_mode: medusa`` and
``medusa_choices`` unless the entry is the base model's own engine), rendered from this package's jinja2 templates. Every ``config.pbtxt`` is
parsed against Triton's model configuration schema before anything is uploaded.

``--backend reference``: the PyTorch reference runtime's repository, written by
``medusa_runtime.serving.triton_repo.write_reference_repository`` from the entry's base model,
heads and tree.

The repository is uploaded to ``--output-uri`` with ``repository.json`` written last.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .. import engine, storage
from . import add_result_argument
from medusa_common.contract import InfraError, StepError, UserError
from medusa_common.triton import pbtxt_string
from medusa_common.tree import normalise_tree, to_brace_form

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
REPOSITORY_MANIFEST = "repository.json"
TOKENIZER_SUBDIR = "1/tokenizer"


class TemplateError(StepError):
    """A generated config does not parse against Triton's schema: a defect of this package."""


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
    trtllm_version: str = engine.TRTLLM_VERSION  # the TensorRT-LLM that built the engine (its manifest says)

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


def parse_model_config(text: str, origin: str = "config.pbtxt"):
    """Parse a config.pbtxt into Triton's ModelConfig message; raises TemplateError when it does not parse."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise TemplateError(f"{origin} does not match Triton's model configuration schema: {exc}") from None


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


def write_reference(out_dir: str | Path, entry_dir: str | Path, *, tree: list[list[int]] | None,
                    max_batch_size: int, device: str, draft_vocab: int | None = None) -> list[str]:
    """The reference runtime's repository for an entry holding base/, heads/ and tree.json
    (base/ alone, and no tree, for the base model's own entry); ``draft_vocab``: the draft
    vocabulary the entry's tree was calibrated for."""
    try:
        from medusa_runtime.serving.triton_repo import write_reference_repository
    except ImportError as exc:
        raise InfraError(f"the reference runtime is not installed in this image ({exc}); "
                         "run package in the builder image") from None
    entry = Path(entry_dir)
    heads = entry / "heads"
    write_reference_repository(str(out_dir), base_dir=str(entry / "base"), heads_dir=str(heads) if tree else None,
                               tree=tree, max_batch_size=max_batch_size, model_name="ensemble", device=device,
                               draft_vocab=draft_vocab if tree else None)
    for config in sorted(Path(out_dir).glob("*/config.pbtxt")):
        parse_model_config(config.read_text(encoding="utf-8"), str(config.relative_to(out_dir)))
    return sorted(p.parent.name for p in Path(out_dir).glob("*/config.pbtxt"))


def register(subparsers) -> None:
    parser = subparsers.add_parser("package", help="turn an engine entry into a Triton model repository",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--engine-uri", required=True, metavar="URI", help="engine entry ({artifacts}/engines/KEY)")
    parser.add_argument("--backend", choices=engine.BACKENDS, default="tensorrt-llm")
    parser.add_argument("--output-uri", required=True, metavar="URI", help="where the repository is written")
    parser.add_argument("--max-batch-size", type=int, metavar="N", help="default: the engine's max batch size")
    parser.add_argument("--kv-cache-free-gpu-mem-fraction", type=float, default=0.9, metavar="F",
                        help="share of free GPU memory for the KV cache (default 0.9)")
    parser.add_argument("--enable-kv-cache-reuse", action="store_true", help="reuse KV-cache blocks across requests")
    parser.add_argument("--decoupled", action="store_true", help="decoupled (streaming) tensorrt_llm model")
    parser.add_argument("--instance-count", type=int, default=1, metavar="N",
                        help="instances of the pre/postprocessing models")
    parser.add_argument("--mount-path", default="/models", metavar="DIR",
                        help="where the serving container mounts the repository (engine path; default /models)")
    parser.add_argument("--device", default="auto", help="reference backend: cpu, cuda or auto")
    parser.add_argument("--work-dir", default="/tmp/medusa-package", metavar="DIR", help="scratch folder")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    storage.add_storage_arguments(parser)
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    storage.apply_storage_arguments(args)
    storage.parse_uri(args.output_uri)
    manifest = storage.read_json(storage.join_uri(args.engine_uri, engine.MANIFEST))
    if manifest is None:
        raise UserError(f"no complete engine at {args.engine_uri} (manifest.json is missing); build it first")
    built_for = manifest.get("backend")
    if built_for != args.backend:
        raise UserError(f"the engine at {args.engine_uri} was built for the {built_for} backend; package it with "
                        f"--backend {built_for} or rebuild it for {args.backend}")
    base_only = not manifest.get("numHeads")
    tree = [] if base_only else normalise_tree(manifest.get("tree"), manifest.get("numHeads"))
    arguments = manifest.get("arguments") or {}
    max_batch_size = args.max_batch_size or int(arguments.get("max_batch_size", 8))
    work = Path(args.work_dir)
    entry, out = work / "entry", work / "repository"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    storage.download(args.engine_uri, entry)
    if args.backend == "tensorrt-llm":
        options = TrtllmRepositoryOptions(
            max_batch_size=max_batch_size, max_input_len=int(arguments.get("max_input_len", 4096)),
            tree=tuple(tuple(p) for p in tree), mount_path=args.mount_path,
            kv_cache_free_gpu_mem_fraction=args.kv_cache_free_gpu_mem_fraction,
            enable_kv_cache_reuse=args.enable_kv_cache_reuse, decoupled=args.decoupled,
            instance_count=args.instance_count,
            trtllm_version=(manifest.get("versions") or {}).get("tensorrtLlm") or engine.TRTLLM_VERSION)
        models = write_trtllm_repository(out, entry, options)
    else:
        models = write_reference(out, entry, tree=None if base_only else tree, max_batch_size=max_batch_size,
                                 device=args.device, draft_vocab=(manifest.get("draftVocabulary") or {}).get("size"))
    description = {"cacheKey": manifest.get("cacheKey"), "backend": args.backend, "engineUri": args.engine_uri,
                   "models": models, "tree": tree, "medusa": not base_only, "maxBatchSize": max_batch_size}
    (out / REPOSITORY_MANIFEST).write_text(json.dumps(description, indent=2), encoding="utf-8")
    uploaded = storage.upload_dir(out, args.output_uri, last=(REPOSITORY_MANIFEST,))
    log.info("packaged %s as %s (%s)", args.engine_uri, args.output_uri, ", ".join(models))
    return {"repositoryUri": args.output_uri, "backend": args.backend, "cacheKey": manifest.get("cacheKey"),
            "models": models, "files": uploaded["files"], "bytes": uploaded["bytes"]}
