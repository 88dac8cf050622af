"""Small checkpoints for the builder tests: base-model folders and Medusa heads in every layout.

Large tensors (a 49152 x 576 output layer) are written as sparse safetensors files: a real
header followed by zero bytes the filesystem does not store, so the files are valid and complete
but cost no time. Tests that read tensor values use small shapes and real random tensors.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

# The real SmolLM2-135M configuration (LlamaForCausalLM).
SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "vocab_size": 49152,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "tie_word_embeddings": True,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-05,
    "rope_theta": 100000,
    "hidden_act": "silu",
    "torch_dtype": "bfloat16",
}

# A base model small enough to hold real weights in tests.
TINY_CONFIG = {**SMOLLM2_CONFIG, "hidden_size": 32, "vocab_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64}

DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F8_E4M3": 1}


def write_sparse_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> Path:
    """A complete safetensors file whose data is all zeros, without writing the zeros."""
    header, offset = {}, 0
    for name, (dtype, shape) in sorted(tensors.items()):
        size = DTYPE_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.truncate(8 + len(raw) + offset)
    return path


def head_layout(num_heads: int, num_layers: int, hidden: int, vocab: int | None, *, prefix: str = "",
                dtype: str = "F16", bias: bool = True, scales: bool = False) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor names and shapes of a head checkpoint (vocab None: no per-head output layer)."""
    tensors = {}
    for h in range(num_heads):
        for l in range(num_layers):
            tensors[f"{prefix}{h}.{l}.linear.weight"] = (dtype, (hidden, hidden))
            if bias:
                tensors[f"{prefix}{h}.{l}.linear.bias"] = ("F16" if dtype == "F8_E4M3" else dtype, (hidden,))
            if scales:
                tensors[f"{prefix}{h}.{l}.linear.weight_scale"] = ("F32", ())
                tensors[f"{prefix}{h}.{l}.linear.input_scale"] = ("F32", ())
        if vocab is not None:
            tensors[f"{prefix}{h}.{num_layers}.weight"] = (dtype, (vocab, hidden))
            if scales:
                tensors[f"{prefix}{h}.{num_layers}.weight_scale"] = ("F32", ())
                tensors[f"{prefix}{h}.{num_layers}.input_scale"] = ("F32", ())
    return tensors


def write_base(folder: Path, config: dict | None = None, *, tokenizer: bool = True) -> Path:
    """A base-model folder with config.json (and small tokenizer files); no weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or SMOLLM2_CONFIG), encoding="utf-8")
    if tokenizer:
        (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 8192}), encoding="utf-8")
        (folder / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|im_end|>"}), encoding="utf-8")
    return folder


def write_heads_config(folder: Path, num_heads: int, num_layers: int = 1) -> None:
    (folder / "config.json").write_text(json.dumps({"medusa_num_heads": num_heads, "medusa_num_layers": num_layers,
                                                    "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M"}),
                                        encoding="utf-8")


def write_sparse_heads(folder: Path, *, num_heads: int = 3, num_layers: int = 1, hidden: int = 576,
                       vocab: int | None = 49152, layout: str = "per-head-output", dtype: str = "F16",
                       claimed_heads: int | None = None) -> Path:
    """Heads in ``layout`` (per-head-output, shared-lm-head, modelopt) with SmolLM2-sized shapes."""
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "modelopt":
        tensors = head_layout(num_heads, num_layers, hidden, vocab, prefix="medusa_heads.", dtype="F8_E4M3",
                              scales=True)
        tensors["model.norm.weight"] = ("BF16", (hidden,))
        write_sparse_safetensors(folder / "model.safetensors", tensors)
        (folder / "config.json").write_text(json.dumps({
            **SMOLLM2_CONFIG, "medusa": {"num_medusa_heads": num_heads, "num_medusa_layers": num_layers}}))
        return folder
    write_sparse_safetensors(folder / "medusa_lm_head.safetensors",
                             head_layout(num_heads, num_layers, hidden,
                                         None if layout == "shared-lm-head" else vocab, dtype=dtype))
    write_heads_config(folder, claimed_heads or num_heads, num_layers)
    return folder


def random_heads_state(num_heads: int, num_layers: int, hidden: int, vocab: int | None, *, bias: bool = True,
                       seed: int = 0) -> dict:
    """Real torch tensors in the canonical layout."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for h in range(num_heads):
        for l in range(num_layers):
            state[f"{h}.{l}.linear.weight"] = torch.randn(hidden, hidden, generator=generator, dtype=torch.float32)
            if bias:
                state[f"{h}.{l}.linear.bias"] = torch.randn(hidden, generator=generator, dtype=torch.float32)
        if vocab is not None:
            state[f"{h}.{num_layers}.weight"] = torch.randn(vocab, hidden, generator=generator, dtype=torch.float32)
    return state


def write_tiny_base_with_weights(folder: Path, seed: int = 1) -> Path:
    """TINY_CONFIG base with a real (tied) embedding table in model.safetensors."""
    import torch
    from safetensors.torch import save_file

    write_base(folder, TINY_CONFIG)
    generator = torch.Generator().manual_seed(seed)
    embed = torch.randn(TINY_CONFIG["vocab_size"], TINY_CONFIG["hidden_size"], generator=generator)
    save_file({"model.embed_tokens.weight": embed.to(torch.bfloat16)}, str(folder / "model.safetensors"))
    return folder


def truncate(path: Path, keep_fraction: float = 0.5) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep_fraction))
