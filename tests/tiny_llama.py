"""A tiny random Llama and random Medusa heads for CPU tests of the reference runtime."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medusa_builder.runtime.heads import MedusaHeads
from medusa_builder.runtime.model import LlamaConfig, LlamaModel

HIDDEN, VOCAB = 64, 97
HF_CONFIG = {"model_type": "llama", "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": 128,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-5,
             "rope_theta": 10000.0, "max_position_embeddings": 2048, "tie_word_embeddings": True}


def tiny_weights(seed: int = 0, layers: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tensors = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=gen),
               "model.norm.weight": torch.ones(HIDDEN)}
    shapes = {"self_attn.q_proj": (64, 64), "self_attn.k_proj": (32, 64), "self_attn.v_proj": (32, 64),
              "self_attn.o_proj": (64, 64), "mlp.gate_proj": (128, 64), "mlp.up_proj": (128, 64),
              "mlp.down_proj": (64, 128)}
    for i in range(layers):
        for name, shape in shapes.items():
            tensors[f"model.layers.{i}.{name}.weight"] = torch.randn(*shape, generator=gen) * 0.15
        tensors[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(HIDDEN)
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = torch.ones(HIDDEN)
    return tensors


def tiny_model(seed: int = 0, layers: int = 2, kernels: bool = False) -> LlamaModel:
    cfg = LlamaConfig.from_hf({**HF_CONFIG, "num_hidden_layers": layers})
    return LlamaModel(cfg, tiny_weights(seed, layers), torch.float32, torch.device("cpu"), kernels=kernels)


def write_tiny_model(folder: Path, layers: int = 2, **config) -> Path:
    """The tiny model as a Hugging Face folder (config.json + safetensors); ``config`` overrides."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**HF_CONFIG, "num_hidden_layers": layers, **config}))
    save_file(tiny_weights(layers=layers), str(folder / "model.safetensors"))
    return folder


def random_heads(num_heads: int, seed: int = 1, scale: float = 0.3, *, layers: int = 1, output_layer: bool = False,
                 lm_head: torch.Tensor | None = None) -> MedusaHeads:
    """Random residual blocks; output layers (if any) start from ``lm_head`` plus noise."""
    heads = MedusaHeads(num_heads, layers, HIDDEN, VOCAB, output_layer=output_layer)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        heads.res_weight.copy_(torch.randn(heads.res_weight.shape, generator=gen) * scale)
        if output_layer:
            start = lm_head if lm_head is not None else torch.zeros(VOCAB, HIDDEN)
            heads.out_weight.copy_(start + torch.randn(heads.out_weight.shape, generator=gen) * scale)
    return heads
