"""Model shapes the benchmarks can take by name, and what a step reads from memory.

Random weights in these shapes measure cost, not quality, so only the published architecture
figures matter (each from the model's config.json on the Hugging Face Hub). RoPE scaling is left
out where a model has it (Llama-3.2): the reference runtime refuses it, and it costs nothing
per step.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from medusa_runtime.engine.model import LlamaConfig, LlamaModel

_LLAMA3 = {"model_type": "llama", "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
           "num_key_value_heads": 8, "tie_word_embeddings": False}

SHAPES: dict[str, dict] = {
    "smollm2-135m": {
        "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0, "max_position_embeddings": 8192, "tie_word_embeddings": True,
    },
    "llama3.2-1b": {**_LLAMA3, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                    "num_attention_heads": 32, "head_dim": 64, "max_position_embeddings": 131072,
                    "tie_word_embeddings": True},
    "llama3-8b": {**_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "max_position_embeddings": 8192},
    "mistral-7b": {
        "model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 32768, "tie_word_embeddings": False,
    },
    "qwen2-7b": {
        "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    },
}


def projections(cfg: LlamaConfig) -> list[dict]:
    """A decoder layer's projections and the output layer as the kernels run them: the kind the
    tile table keys on, output width ``n`` (gate and up: each), input width ``k``, and how many
    such weights a step reads."""
    heads, kv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    layers = cfg.num_layers
    return [
        {"name": "qkv", "kind": "norm", "n": (heads + 2 * kv) * d, "k": cfg.hidden_size, "bias": cfg.attention_bias,
         "count": layers},
        {"name": "o", "kind": "plain", "n": cfg.hidden_size, "k": heads * d, "bias": False, "count": layers},
        {"name": "gate_up", "kind": "gated", "n": cfg.intermediate_size, "k": cfg.hidden_size, "bias": False,
         "count": layers},
        {"name": "down", "kind": "plain", "n": cfg.hidden_size, "k": cfg.intermediate_size, "bias": False,
         "count": layers},
        {"name": "lm_head", "kind": "argmax", "n": cfg.vocab_size, "k": cfg.hidden_size, "bias": False, "count": 1},
    ]


def plain_step_bytes(model: LlamaModel) -> int:
    """Bytes of weights a one-token step reads: every layer's projections, biases and norms, the
    final norm and the output layer (the token's embedding row and the KV cache are left out:
    under 0.5% for the 7-8B shapes at a few hundred positions)."""
    tensors = [model.final_norm, model.lm_head]
    for layer in model.layers:
        tensors += [t for t in layer.values() if t is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


def random_weights(cfg: LlamaConfig, device: torch.device, dtype: torch.dtype,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Hugging Face-named random weights, drawn on ``device`` in ``dtype`` (an 8B model in seconds
    on a GPU rather than minutes of float32 on the CPU)."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype) * 0.02

    def ones(*shape: int) -> torch.Tensor:
        return torch.ones(*shape, device=device, dtype=dtype)

    hidden, kv = cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim
    q = cfg.num_heads * cfg.head_dim
    tensors = {"model.embed_tokens.weight": normal(cfg.vocab_size, hidden), "model.norm.weight": ones(hidden)}
    shapes = {"self_attn.q_proj": (q, hidden), "self_attn.k_proj": (kv, hidden), "self_attn.v_proj": (kv, hidden),
              "self_attn.o_proj": (hidden, q), "mlp.gate_proj": (cfg.intermediate_size, hidden),
              "mlp.up_proj": (cfg.intermediate_size, hidden), "mlp.down_proj": (hidden, cfg.intermediate_size)}
    biases = {"self_attn.q_proj": q, "self_attn.k_proj": kv, "self_attn.v_proj": kv} if cfg.attention_bias else {}
    for i in range(cfg.num_layers):
        for name, shape in shapes.items():
            tensors[f"model.layers.{i}.{name}.weight"] = normal(*shape)
        for name, width in biases.items():
            tensors[f"model.layers.{i}.{name}.bias"] = normal(width)
        tensors[f"model.layers.{i}.input_layernorm.weight"] = ones(hidden)
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = ones(hidden)
    if not cfg.tie_word_embeddings:
        tensors["lm_head.weight"] = normal(cfg.vocab_size, hidden)
    return tensors


def best_gpu_seconds(work, runs: int = 10) -> float:
    """The least GPU time of ``runs`` calls of ``work`` (which only queues GPU work), each timed
    apart by CUDA events, after one untimed call."""
    work()
    best = float("inf")
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    return best


@triton.jit
def _read_kernel(src_ptr, out_ptr, n, BLOCK: tl.constexpr, STEPS: tl.constexpr):
    """Sums STEPS blocks of BLOCK float32s: a stream of loads, nothing written but one partial sum."""
    base = tl.program_id(0) * BLOCK * STEPS
    acc = tl.zeros((BLOCK,), tl.float32)
    for step in range(STEPS):
        offsets = base + step * BLOCK + tl.arange(0, BLOCK)
        acc += tl.load(src_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(out_ptr + tl.program_id(0), tl.sum(acc))


def read_bandwidth(device: torch.device, gib: float = 4.0) -> dict[str, float]:
    """The card's memory bandwidth in bytes/s, measured two ways on a buffer far larger than the
    L2 cache: ``read`` streams it once through a Triton reduction (bytes read), ``copy`` is a
    device-to-device copy (bytes read plus written). Best of several timed runs each."""
    n = int(gib * 2**30) // 4
    src = torch.rand(n, device=device)
    block, steps = 2048, 16
    programs = triton.cdiv(n, block * steps)
    partial = torch.empty(programs, device=device)
    dst = torch.empty_like(src)

    read = best_gpu_seconds(lambda: _read_kernel[(programs,)](src, partial, n, BLOCK=block, STEPS=steps, num_warps=8))
    copy = best_gpu_seconds(lambda: dst.copy_(src))
    if not torch.allclose(partial.sum(), src.sum(), rtol=1e-3):
        raise RuntimeError("the bandwidth probe's read kernel summed the buffer wrongly")
    del src, dst, partial
    torch.cuda.empty_cache()
    return {"read": 4 * n / read, "copy": 2 * 4 * n / copy}
