"""Loading Medusa head tensors (torch, safetensors) in every layout ``medusa_common.checkpoint``
describes, and writing them in the layout TensorRT-LLM's converter reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medusa_common.checkpoint import (FP8_DTYPES, OUTPUT_TENSOR, RESIDUAL_TENSOR, BaseInfo, HeadsInfo, canonical_names,
                                      describe_heads, find_head_files, load_pt_state, read_base_config,
                                      read_safetensors_header, require_torch)
from medusa_common.contract import UserError


def _load_tensors(files: list[Path], file_format: str) -> dict[str, Any]:
    if file_format == "pt":
        return load_pt_state(files[0])
    require_torch()
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for file in files:
        read_safetensors_header(file)
        try:
            state.update(load_file(str(file)))
        except Exception as exc:  # noqa: BLE001 - a damaged file despite a sane header
            raise UserError(f"{file} cannot be read ({exc}); download it again") from None
    return state


def load_heads(heads_dir: str | Path) -> tuple[HeadsInfo, dict[str, Any]]:
    """Head tensors under canonical names (``{h}.{l}.linear.weight``/``bias``, ``{h}.{L}.weight``).

    FP8 tensors are dequantised with their weight scales to float32; other tensors keep their dtype.
    """
    info = describe_heads(heads_dir)
    files, file_format = find_head_files(heads_dir)
    raw = _load_tensors(files, file_format)
    _, canonical = canonical_names(sorted(raw))
    state = {}
    for name, stored in canonical.items():
        if not (RESIDUAL_TENSOR.match(name) or OUTPUT_TENSOR.match(name)):
            continue
        tensor = raw[stored]
        if str(tensor.dtype).removeprefix("torch.") in FP8_DTYPES:
            base = name.removesuffix(".weight")
            scale = raw.get(f"{info.prefix}{base}.weight_scale")
            tensor = tensor.float() * (scale.float() if scale is not None else 1.0)
        state[name] = tensor
    return info, state


def _base_output_weight(base_dir: Path, base: BaseInfo):
    """The base model's lm_head weight (or the tied embedding), read tensor by tensor."""
    from safetensors import safe_open

    lm_heads = ["lm_head.weight", "language_model.lm_head.weight"]
    embeddings = ["model.embed_tokens.weight", "embed_tokens.weight", "language_model.model.embed_tokens.weight"]
    wanted = embeddings + lm_heads if base.tie_word_embeddings else lm_heads + embeddings
    files = sorted(base_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"no safetensors weights in {base_dir}; the base lm_head is needed to give the heads "
                        "output layers")
    headers = {f: read_safetensors_header(f) for f in files}
    for name in wanted:
        for file, header in headers.items():
            if name in header:
                with safe_open(str(file), framework="pt") as fh:
                    return fh.get_tensor(name)
    raise UserError(f"the base model in {base_dir} has neither lm_head.weight nor model.embed_tokens.weight; "
                    "it cannot give the heads output layers")


def write_converter_heads(heads_dir: str | Path, base_dir: str | Path, out_dir: str | Path,
                          dtype: str = "float16") -> HeadsInfo:
    """Write heads in the layout TensorRT-LLM's converter reads, with a truthful config.json.

    Heads without output layers get copies of the base lm_head; heads without biases get zero
    biases; FP8 heads are dequantised. Output: ``medusa_lm_head.safetensors`` + ``config.json``.
    """
    torch = require_torch()
    from safetensors.torch import save_file

    base = read_base_config(base_dir)
    info, state = load_heads(heads_dir)
    target_dtype = getattr(torch, dtype)
    out: dict[str, Any] = {}
    lm_head = None
    for h in range(info.num_heads):
        for l in range(info.num_layers):
            weight = state[f"{h}.{l}.linear.weight"]
            out[f"{h}.{l}.linear.weight"] = weight.to(target_dtype).contiguous()
            bias = state.get(f"{h}.{l}.linear.bias")
            out[f"{h}.{l}.linear.bias"] = (bias.to(target_dtype) if bias is not None
                                           else torch.zeros(info.hidden_size, dtype=target_dtype)).contiguous()
        output = state.get(f"{h}.{info.num_layers}.weight")
        if output is None:
            if lm_head is None:
                lm_head = _base_output_weight(Path(base_dir), base).to(target_dtype).contiguous()
            output = lm_head
        out[f"{h}.{info.num_layers}.weight"] = output.to(target_dtype).clone().contiguous()
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    save_file(out, str(target / "medusa_lm_head.safetensors"))
    config = {"medusa_num_heads": info.num_heads, "medusa_num_layers": info.num_layers,
              "hidden_size": info.hidden_size, "vocab_size": base.vocab_size,
              "base_model_name_or_path": str(base_dir)}
    (target / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return describe_heads(target)

