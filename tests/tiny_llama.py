"""A tiny random Llama and random Medusa heads for CPU tests of the reference runtime."""

from __future__ import annotations

import torch

from medusa_builder.runtime.heads import MedusaHeads
from medusa_builder.runtime.model import LlamaConfig, LlamaModel

HIDDEN, VOCAB = 64, 97


def tiny_model(seed: int = 0, layers: int = 2, kernels: bool = False) -> LlamaModel:
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_layers=layers, num_heads=4,
                      num_kv_heads=2, head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0, max_positions=2048,
                      tie_word_embeddings=True, attention_bias=False)
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
    return LlamaModel(cfg, tensors, torch.float32, torch.device("cpu"), kernels=kernels)


def random_heads(num_heads: int, seed: int = 1, scale: float = 0.3) -> MedusaHeads:
    heads = MedusaHeads(num_heads, 1, HIDDEN, VOCAB, output_layer=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        heads.res_weight.copy_(torch.randn(heads.res_weight.shape, generator=gen) * scale)
    return heads
