"""A compact Llama-family decoder for the reference runtime, with a static KV cache.

The runtime owns its forward pass (instead of calling a transformers model) so that every step
has fixed shapes: tree verification writes into preallocated cache slots, attention takes an
explicit mask, and on CUDA a whole decoding step can be captured once as a graph. Weights are
read from a Hugging Face folder (config.json + safetensors); llama, mistral and qwen2 layouts
are supported.

Decoding (``decode``) has two implementations: plain torch operations with an explicit mask
(CPU, training) and the batch-invariant Triton kernels of ``kernels`` (CUDA), which keep tree
decoding token-identical to one-token decoding in any dtype.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from medusa_common.contract import UserError
from medusa_runtime.engine.weights import dense

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_positions: int
    tie_word_embeddings: bool
    attention_bias: bool

    @classmethod
    def from_hf(cls, cfg: dict) -> "LlamaConfig":
        model_type = cfg.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UserError(
                f"the reference runtime supports model types {', '.join(SUPPORTED_MODEL_TYPES)}, "
                f"not {model_type!r}; use the tensorrt-llm backend for this model"
            )
        # transformers 5 keeps RoPE settings under rope_parameters; 4.x used rope_theta/rope_scaling.
        rope = cfg.get("rope_parameters") or {}
        scaling = cfg.get("rope_scaling") or rope
        if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
            raise UserError(
                f"the reference runtime does not implement rope_scaling {scaling!r}; "
                "use a model without RoPE scaling or the tensorrt-llm backend"
            )
        heads = cfg["num_attention_heads"]
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)),
            max_positions=cfg.get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=bool(cfg.get("attention_bias", model_type == "qwen2")),
        )


def read_config(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{model_dir} has no config.json; point the base model at a Hugging Face model folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_safetensors_folder(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's *.safetensors files (sharded or not), on the CPU."""
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir} has no *.safetensors weights; convert the model to safetensors first")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(str(file)))
    return tensors


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm computed in float32 (one fused kernel where torch has it)."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    return weight * F.rms_norm(x.float(), weight.shape, None, eps).to(x.dtype)


def decode_mask(positions: torch.Tensor, committed: torch.Tensor, ancestors: torch.Tensor, keys: int) -> torch.Tensor:
    """[T, keys] attention mask of ``decode``: cache slots below ``committed`` up to each token's
    position, then the slots ``committed + ancestors[t, d]`` of its tree ancestors (itself last)."""
    slots = torch.arange(keys, device=positions.device)
    mask = (slots < committed) & (slots <= positions.unsqueeze(1))
    depths = torch.arange(ancestors.shape[1], device=positions.device)
    valid = depths.unsqueeze(0) <= (positions - committed).unsqueeze(1)
    tree_slots = (committed + ancestors).clamp(max=keys - 1)
    hits = torch.zeros(mask.shape, dtype=torch.long, device=positions.device).scatter_add_(1, tree_slots, valid.long())
    return mask | (hits > 0)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, half-split layout: x*cos + rotate_half(x)*sin, where rotate_half is a
    roll by half the head size and ``signed_sin`` carries the minus sign of its first half."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


class KVCache:
    """Preallocated keys and values: [layers, batch, kv_heads, max_len, head_dim] each."""

    def __init__(self, cfg: LlamaConfig, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len

    def move_slots(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copy cache slots ``src`` to ``dst`` (same length) in every layer: KV compaction."""
        self.k.index_copy_(3, dst, self.k.index_select(3, src))
        self.v.index_copy_(3, dst, self.v.index_select(3, src))


class LlamaModel:
    """Inference-only Llama forward pass over fused weights (no autograd)."""

    def __init__(self, cfg: LlamaConfig, tensors: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device,
                 *, kernels: bool = False):
        self.cfg = cfg
        self.dtype = dtype
        self.device = torch.device(device)
        # With kernels, decode() keeps the residual stream in float32.
        self.kernels = kernels

        def take(name: str) -> torch.Tensor:
            if name not in tensors:
                raise UserError(f"the base model's weights lack tensor {name!r}; is this a complete Llama-family "
                                "checkpoint in Hugging Face naming?")
            return tensors[name].to(device=self.device, dtype=dtype)

        self.embed = take("model.embed_tokens.weight")
        self.lm_head = self.embed if cfg.tie_word_embeddings or "lm_head.weight" not in tensors else take("lm_head.weight")
        self.final_norm = take("model.norm.weight")
        self.layers = []
        for i in range(cfg.num_layers):
            p = f"model.layers.{i}."
            qkv = torch.cat([take(p + f"self_attn.{n}_proj.weight") for n in "qkv"])
            qkv_bias = (
                torch.cat([take(p + f"self_attn.{n}_proj.bias") for n in "qkv"]) if cfg.attention_bias else None
            )
            self.layers.append({
                "attn_norm": take(p + "input_layernorm.weight"),
                "qkv": qkv,
                "qkv_bias": qkv_bias,
                "o": take(p + "self_attn.o_proj.weight"),
                "mlp_norm": take(p + "post_attention_layernorm.weight"),
                "gate_up": torch.cat([take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")]),
                "down": take(p + "mlp.down_proj.weight"),
            })
        if kernels:
            self._pack_for_kernels()
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
        angles = torch.outer(torch.arange(cfg.max_positions, dtype=torch.float64), inv_freq)
        self.cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(device=self.device, dtype=dtype)
        self.signed_sin = torch.cat([-angles.sin(), angles.sin()], dim=-1).to(device=self.device, dtype=dtype)
        if kernels:
            self.half_cos = angles.cos().to(device=self.device, dtype=torch.float32)
            self.half_sin = angles.sin().to(device=self.device, dtype=torch.float32)

    # Each layer weight's projection kind, as the kernels' tile table names it.
    LAYER_WEIGHT_KINDS = {"qkv": "norm", "o": "plain", "gate_up": "gated", "down": "plain"}

    def _pack_for_kernels(self) -> None:
        """Keep each layer weight in the layout its tiles read fastest (a ``PackedWeight`` where
        the table says so; the same bits either way). The output layer stays row-major: the
        embedding and the heads read it too."""
        from medusa_runtime.engine import kernels

        for layer in self.layers:
            for name, kind in self.LAYER_WEIGHT_KINDS.items():
                layer[name] = kernels.pack_for_tiles(layer[name], kind)

    @classmethod
    def load(cls, model_dir: str | Path, *, dtype: str = "float32", device: str | torch.device = "cpu",
             kernels: str = "auto") -> "LlamaModel":
        """``kernels``: ``auto`` decodes through the Triton kernels for bfloat16 weights on CUDA
        (in float32 cuBLAS is faster and its row differences almost never flip a greedy choice),
        ``on`` insists on them, ``off`` uses plain torch operations. ``dtype`` ``auto`` is
        bfloat16 where those kernels run on CUDA, else float32: the fastest exact choice."""
        if dtype not in DTYPES and dtype != "auto":
            raise UserError(f"unknown dtype {dtype!r}; use auto or one of {', '.join(DTYPES)}")
        if kernels not in ("auto", "on", "off"):
            raise UserError(f"unknown kernels setting {kernels!r}; use auto, on or off")
        cfg = LlamaConfig.from_hf(read_config(model_dir))
        device = torch.device(device)
        if dtype == "auto":
            fast = device.type == "cuda" and kernels != "off" and not kernels_unsupported(cfg, device, "bfloat16")
            dtype = "bfloat16" if fast else "float32"
        unsupported = kernels_unsupported(cfg, device, dtype)
        if kernels == "on" and unsupported:
            raise UserError(f"the Triton decoding kernels cannot run here: {unsupported}; use kernels off")
        use_kernels = kernels == "on" or (kernels == "auto" and not unsupported and dtype == "bfloat16")
        return cls(cfg, read_safetensors_folder(model_dir), DTYPES[dtype], device, kernels=use_kernels)

    def new_cache(self, max_len: int, batch: int = 1) -> KVCache:
        if max_len > self.cfg.max_positions:
            raise UserError(f"prompt plus output needs {max_len} positions; the model supports {self.cfg.max_positions}")
        return KVCache(self.cfg, batch, max_len, self.dtype, self.device)

    @torch.no_grad()
    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache | None = None,
        slots: torch.Tensor | None = None,
        *,
        final_norm: bool = True,
    ) -> torch.Tensor:
        """Final-norm hidden states [B, T, hidden] for ``tokens`` [B, T] (the residual stream
        before the final norm with ``final_norm=False``).

        ``mask`` [B, T, S] (True = may attend; every row needs one) covers the S keys: the cache's
        ``max_len`` slots when a cache is given (the new keys are first written at ``slots``),
        else the T new tokens themselves.
        """
        cfg = self.cfg
        bsz, seq = tokens.shape
        heads, kv_heads, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        group = heads // kv_heads
        q_size = heads * head_dim
        cos = self.cos[positions].unsqueeze(1)
        sin = self.signed_sin[positions].unsqueeze(1)
        keys = mask.shape[-1]
        # Query heads h*group..h*group+group-1 share kv head h: fold the group into the rows, so
        # attention is two batched matmuls per kv head. The mask becomes additive (0 / -inf) and
        # is fused into the first matmul; masked keys get exactly zero weight.
        bias = torch.zeros(mask.shape, dtype=self.dtype, device=self.device).masked_fill_(~mask, float("-inf"))
        bias = bias.unsqueeze(1).unsqueeze(2).expand(bsz, kv_heads, group, seq, keys)
        bias = bias.reshape(bsz * kv_heads, group * seq, keys)
        scale = head_dim**-0.5
        # Activations stay 2-D [tokens, hidden] so residual adds fuse into the matmuls (addmm).
        x = self.embed[tokens.reshape(-1)]
        for index, layer in enumerate(self.layers):
            h = rms_norm(x, layer["attn_norm"], cfg.rms_norm_eps)
            qkv = F.linear(h, dense(layer["qkv"]), layer["qkv_bias"])
            qkv = qkv.view(bsz, seq, heads + 2 * kv_heads, head_dim).transpose(1, 2)
            qk = apply_rope(qkv[:, : heads + kv_heads], cos, sin)
            q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads:]
            if cache is not None:
                cache.k[index].index_copy_(2, slots, k)
                cache.v[index].index_copy_(2, slots, v)
                k, v = cache.k[index], cache.v[index]
            q = q.reshape(bsz * kv_heads, group * seq, head_dim)
            scores = torch.baddbmm(bias, q, k.reshape(bsz * kv_heads, -1, head_dim).transpose(1, 2), alpha=scale)
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(self.dtype)
            out = torch.bmm(weights, v.reshape(bsz * kv_heads, -1, head_dim))
            out = out.view(bsz, heads, seq, head_dim).transpose(1, 2).reshape(bsz * seq, q_size)
            x = torch.addmm(x, out, dense(layer["o"]).t())
            h = rms_norm(x, layer["mlp_norm"], cfg.rms_norm_eps)
            gate, up = F.linear(h, dense(layer["gate_up"])).chunk(2, dim=-1)
            x = torch.addmm(x, F.silu(gate).mul_(up), dense(layer["down"]).t())
        x = x.view(bsz, seq, cfg.hidden_size)
        return rms_norm(x, self.final_norm, cfg.rms_norm_eps) if final_norm else x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.lm_head)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, committed: torch.Tensor,
               ancestors: torch.Tensor, cache: KVCache, slots: torch.Tensor) -> torch.Tensor:
        """Residual stream [T, hidden] (before the final norm) of one sequence's ``tokens`` [T].

        Token ``t`` sits at ``positions[t]``, its keys and values go to cache ``slots[t]``; it
        attends the cache below ``committed`` up to its position, then (a tree node) the slots
        ``committed + ancestors[t, :depth + 1]`` of its ancestors and itself. Prefill passes
        ``committed`` = prompt length; a one-token step ``ancestors`` = [[0]].
        """
        if not self.kernels:
            mask = decode_mask(positions, committed, ancestors, cache.max_len)
            return self.forward(tokens.unsqueeze(0), positions.unsqueeze(0), mask.unsqueeze(0), cache, slots,
                                final_norm=False)[0]
        x = self.embed.index_select(0, tokens).float()
        self.decode_layers(x, range(len(self.layers)), positions, committed, ancestors, cache, slots)
        return x

    @torch.no_grad()
    def decode_layers(self, x: torch.Tensor, layers: range, positions: torch.Tensor, committed: torch.Tensor,
                      ancestors: torch.Tensor, cache: KVCache, slots: torch.Tensor) -> None:
        """``decode``'s work for ``layers`` alone, on its float32 residual stream ``x`` [T, hidden]
        in place (kernels only): a step can then be launched in parts."""
        from medusa_runtime.engine import kernels

        cfg = self.cfg
        eps = cfg.rms_norm_eps
        for index in layers:
            layer = self.layers[index]
            k_cache, v_cache = cache.k[index, 0], cache.v[index, 0]
            qkv = kernels.linear(x, layer["qkv"], bias=layer["qkv_bias"], norm=layer["attn_norm"], eps=eps)
            q = kernels.rope_and_store(qkv, self.half_cos, self.half_sin, positions, slots, k_cache, v_cache,
                                       cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
            # The o and down projections' inputs are kept in their weights' dtype: bit for bit
            # what those projections compute with, at half the bytes a tree's tiles re-read.
            out = kernels.attention(q, k_cache, v_cache, positions, committed, ancestors, cfg.num_kv_heads,
                                    out_dtype=layer["o"].dtype)
            kernels.linear(out, layer["o"], residual=x, out=x)
            act = kernels.linear(x, layer["gate_up"], norm=layer["mlp_norm"], eps=eps, gated=True,
                                 out_dtype=layer["down"].dtype)
            kernels.linear(act, layer["down"], residual=x, out=x)

    def next_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Greedy next token [T] after each row of ``decode``'s output."""
        if self.kernels:
            from medusa_runtime.engine import kernels

            return kernels.greedy_tokens(x, self.lm_head, norm=self.final_norm, eps=self.cfg.rms_norm_eps)
        return self.logits(self.final_hidden(x)).argmax(dim=-1)

    def final_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states, in the model's dtype, of ``decode``'s output (the heads' input)."""
        if x.dtype == self.dtype:
            return rms_norm(x, self.final_norm, self.cfg.rms_norm_eps)
        normed = F.rms_norm(x.float(), (self.cfg.hidden_size,), None, self.cfg.rms_norm_eps)
        return (normed * self.final_norm.float()).to(self.dtype)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Causal forward over whole sequences [B, T] without a cache (training, calibration)."""
        seq = tokens.shape[1]
        positions = torch.arange(seq, device=self.device).unsqueeze(0).expand_as(tokens)
        causal = torch.ones(seq, seq, dtype=torch.bool, device=self.device).tril()
        return self.forward(tokens, positions, causal.unsqueeze(0).expand(tokens.shape[0], seq, seq))


def kernels_unsupported(cfg: LlamaConfig, device: torch.device, dtype: str) -> str | None:
    """Why the Triton decoding kernels cannot serve this model in this dtype on this device
    (None: they can)."""
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return "they need a CUDA device"
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed"
    if cfg.head_dim & (cfg.head_dim - 1) or cfg.head_dim < 16:
        return f"head size {cfg.head_dim} is not a power of two of at least 16"
    if dtype == "float16":
        return "float16 can overflow on activations they scale before normalising; use bfloat16"
    return None


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; anything else must be a device torch knows."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} was asked for but this machine has no CUDA GPU; use --device cpu or auto")
    return resolved
