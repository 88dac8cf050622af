"""A tiny random Llama and random Medusa heads for CPU tests of the reference runtime."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medusa_runtime.engine.decoding import MedusaDecoder, build_tree_buffers
from medusa_runtime.engine.heads import MedusaHeads
from medusa_runtime.engine.model import LlamaConfig, LlamaModel

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


def tiny_model(seed: int = 0, layers: int = 2, kernels: bool = False, *, dtype: torch.dtype = torch.float32,
               device: str = "cpu") -> LlamaModel:
    cfg = LlamaConfig.from_hf({**HF_CONFIG, "num_hidden_layers": layers})
    return LlamaModel(cfg, tiny_weights(seed, layers), dtype, torch.device(device), kernels=kernels)


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


# How far the tiny model's float32 results may part on the CPU when computed in shapes that must
# not matter (a batch or one sequence at a time, a tree step or one-token steps): BLAS libraries
# round a row by the matrix's shape and, on some processors, by the row's place in a tile (NumPy's
# OpenBLAS on an AMD EPYC rounds rows 0-5 of a 16-row tile unlike the others), up to about 3e-6
# here. A wrong attention mask or cache slot moves values by 0.1 and more. The GPU kernels promise
# bit identity and are held to it (tests/gpu, benchmarks/step_cost.py).
CPU_ROUNDING = {"rtol": 1e-5, "atol": 1e-4}


def assert_equal_but_for_cpu_rounding(actual, expected) -> None:
    torch.testing.assert_close(actual, expected, **CPU_ROUNDING)


def prefill(model: LlamaModel, prompt: list[int], max_len: int = 64):
    """The prompt's rows (residual stream) through ``model.decode`` and the cache it filled."""
    device = model.device
    cache = model.new_cache(max_len)
    positions = torch.arange(len(prompt), device=device)
    first = torch.zeros(len(prompt), 1, dtype=torch.long, device=device)
    committed = torch.tensor(len(prompt), device=device)
    return model.decode(torch.tensor(prompt, device=device), positions, committed, first, cache, positions), cache


def tree_and_one_token_rows(model: LlamaModel, prompt_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[3, hidden] twice: the rows of the chain root -> [0] -> [0, 1] from one tree step (with
    decoys between its nodes) and the same three tokens decoded one at a time, after the same prompt."""
    device = model.device
    prompt, chain = [(5 + 11 * i) % VOCAB for i in range(prompt_length)], [11, 12, 13]
    _, cache = prefill(model, prompt)
    alone = []
    for i, token in enumerate(chain):
        n = torch.tensor(len(prompt) + i, device=device)
        itself = torch.zeros(1, 1, dtype=torch.long, device=device)
        alone.append(model.decode(torch.tensor([token], device=device), n.view(1), n, itself, cache, n.view(1))[0])
    # Sorted nodes: root, [0], [1], [0, 0], [0, 1], [1, 0]; the chain's rows are 0, 1 and 4.
    tb = build_tree_buffers([[0], [1], [0, 0], [0, 1], [1, 0]], device)
    tokens = torch.tensor([11, 12, 90, 91, 13, 92], device=device)
    _, cache = prefill(model, prompt)
    n = torch.tensor(len(prompt), device=device)
    tree = model.decode(tokens, n + tb.depths, n, tb.ancestors, cache, n + torch.arange(tb.size, device=device))
    return tree[[0, 1, 4]], torch.stack(alone)


# One whole 16-key chunk and part of the next; padded to 32 rows in prefill checks.
PADDED_PROMPT = [(3 + 7 * i) % VOCAB for i in range(21)]


def prefilled_state(model: LlamaModel, prompt: list[int], bucket: int) -> dict[str, torch.Tensor]:
    """What a Medusa decoder's prefill of ``prompt`` padded to a multiple of ``bucket`` rows leaves
    for the first step: the next token, the heads' features and the cache below the prompt's end."""
    decoder = MedusaDecoder(model, random_heads(2), [[0], [0, 0]], prefill_bucket=bucket)
    session = decoder._session(64)
    decoder._prefill(session, prompt)
    below = slice(0, len(prompt))
    return {"n": session.n, "root": session.root, "features": session.features,
            "k": session.cache.k[..., below, :], "v": session.cache.v[..., below, :]}
