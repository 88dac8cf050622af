"""Writes a Triton model repository that serves the reference runtime through the Python backend.

Layout (self-contained: weights travel with the repository)::

    <output_dir>/<model_name>/config.pbtxt
    <output_dir>/<model_name>/1/model.py     # medusa_runtime/serving/triton_model.py
    <output_dir>/<model_name>/1/base/        # the base model folder (hard links where possible)
    <output_dir>/<model_name>/1/heads/       # the Medusa heads, when given

The server's Python environment needs ``medusa-operator[runtime]`` installed (torch,
transformers, safetensors and this package).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from medusa_common.contract import UserError
from medusa_common.files import link_or_copy
from medusa_common.triton import pbtxt_string
from medusa_common.tree import normalise_tree, resolve_tree, to_brace_form

MODEL_FILE = Path(__file__).with_name("triton_model.py")
DEVICES = ("auto", "cpu", "cuda")

_INPUTS = [
    ("text_input", "TYPE_STRING", False),
    ("max_tokens", "TYPE_INT32", False),
    ("end_id", "TYPE_INT32", True),
    ("pad_id", "TYPE_INT32", True),
    ("temperature", "TYPE_FP32", True),
    ("stream", "TYPE_BOOL", True),
    ("return_perf_metrics", "TYPE_BOOL", True),
]
_OUTPUTS = [
    ("text_output", "TYPE_STRING", "-1"),
    ("acceptance_rate", "TYPE_FP32", "1"),
    ("total_accepted_draft_tokens", "TYPE_INT32", "1"),
    ("total_draft_tokens", "TYPE_INT32", "1"),
]


def render_config(model_name: str, max_batch_size: int, device: str, parameters: dict[str, str]) -> str:
    """The model's config.pbtxt (Triton's protobuf text format)."""
    lines = [f"name: {pbtxt_string(model_name)}", 'backend: "python"', f"max_batch_size: {max_batch_size}"]
    if max_batch_size > 0:
        lines.append("dynamic_batching { }")
    lines.append("input [")
    lines.append(",\n".join(
        f"  {{ name: {pbtxt_string(name)} data_type: {dtype} dims: [ 1 ]{' optional: true' if optional else ''} }}"
        for name, dtype, optional in _INPUTS
    ))
    lines.append("]")
    lines.append("output [")
    lines.append(",\n".join(
        f"  {{ name: {pbtxt_string(name)} data_type: {dtype} dims: [ {dims} ] }}" for name, dtype, dims in _OUTPUTS
    ))
    lines.append("]")
    if device in ("cpu", "cuda"):
        kind = "KIND_CPU" if device == "cpu" else "KIND_GPU"
        lines.append(f"instance_group [ {{ count: 1 kind: {kind} }} ]")
    for key, value in sorted(parameters.items()):
        lines.append(f"parameters {{ key: {pbtxt_string(key)} value: {{ string_value: {pbtxt_string(value)} }} }}")
    return "\n".join(lines) + "\n"


def _link_or_copy_folder(source: Path, target: Path) -> None:
    """Copy a folder's files (recursively), hard-linking where the filesystem allows."""
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        link_or_copy(path, destination)


def write_reference_repository(
    output_dir: str | Path,
    *,
    base_dir: str | Path,
    heads_dir: str | Path | None = None,
    tree: Sequence[Sequence[int]] | None = None,
    max_batch_size: int = 8,
    model_name: str = "ensemble",
    device: str = "auto",
    dtype: str = "auto",
    draft_vocab: int | None = None,
) -> dict[str, Any]:
    """Write the repository; ``heads_dir=None`` serves the base model alone (the baseline).

    Without an explicit ``tree`` the default preset for the heads' count is used. ``draft_vocab``:
    the heads propose only their training's N most frequent tokens (``heads.draft_vocabulary``;
    give the size the tree was calibrated for).
    """
    from medusa_runtime.engine.heads import MedusaHeads, draft_vocabulary, read_head_tensors

    base_dir = Path(base_dir)
    if not (base_dir / "config.json").is_file():
        raise UserError(f"base model folder {base_dir} has no config.json; give a Hugging Face model folder")
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if max_batch_size < 0:
        raise UserError(f"max_batch_size must be 0 or more, got {max_batch_size}")
    num_heads = 0
    resolved_tree: list[list[int]] = []
    if heads_dir is not None:
        heads = MedusaHeads.from_published(read_head_tensors(heads_dir))
        num_heads = heads.num_heads
        resolved_tree = normalise_tree(tree, num_heads) if tree is not None else resolve_tree(None, None, num_heads)
    elif tree is not None:
        raise UserError("a tree was given without Medusa heads; give heads_dir or drop the tree")
    if draft_vocab is not None:
        if heads_dir is None:
            raise UserError("a draft vocabulary was given without Medusa heads; give heads_dir or drop it")
        vocab_size = json.loads((base_dir / "config.json").read_text()).get("vocab_size")
        if not isinstance(vocab_size, int):
            raise UserError(f"{base_dir / 'config.json'} names no vocab_size; a draft vocabulary needs it")
        draft_vocabulary(heads_dir, draft_vocab, vocab_size)  # refuse a bad size or missing counts now, not at load

    model_dir = Path(output_dir) / model_name
    version_dir = model_dir / "1"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    version_dir.mkdir(parents=True)
    shutil.copyfile(MODEL_FILE, version_dir / "model.py")
    _link_or_copy_folder(base_dir, version_dir / "base")
    parameters = {"base_dir": "base", "device": device, "dtype": dtype}
    if heads_dir is not None:
        _link_or_copy_folder(Path(heads_dir), version_dir / "heads")
        parameters.update({
            "heads_dir": "heads",
            "tree": json.dumps(resolved_tree),
            "medusa_choices": to_brace_form(resolved_tree),
            "decoding_mode": "medusa",
        })
        if draft_vocab is not None:
            parameters["draft_vocab"] = str(draft_vocab)
    (model_dir / "config.pbtxt").write_text(render_config(model_name, max_batch_size, device, parameters))
    return {
        "modelName": model_name,
        "repositoryDir": str(Path(output_dir)),
        "backend": "reference",
        "numHeads": num_heads,
        "tree": resolved_tree,
        "maxBatchSize": max_batch_size,
        "device": device,
        "draftVocabulary": draft_vocab,
    }
