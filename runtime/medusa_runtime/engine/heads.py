"""Medusa heads: residual SiLU blocks on the base model's last hidden state, then either a
per-head output layer or the base model's own lm_head.

Head ``h`` (0-based) predicts the token ``h + 2`` positions after the hidden state's token:
head 0 guesses the token after the one the base model predicts. Parameters are kept stacked
over heads so one batched matmul serves all heads; ``state_dict_published`` and
``from_published`` convert to and from the published per-head layout
(``{h}.{l}.linear.weight`` / ``.bias``, ``{h}.{L}.weight``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medusa_common.contract import UserError

WEIGHTS_FILE = "medusa_lm_head.safetensors"
CONFIG_FILE = "config.json"
TOKEN_COUNTS_FILE = "token_counts.safetensors"  # beside the heads; not part of the published layout
_KEY = re.compile(r"^(\d+)\.(\d+)\.(linear\.weight|linear\.bias|weight)$")


class MedusaHeads(nn.Module):
    def __init__(self, num_heads: int, num_layers: int, hidden_size: int, vocab_size: int, output_layer: bool):
        super().__init__()
        if num_heads < 1 or num_layers < 0:
            raise UserError(f"Medusa needs at least one head and zero or more layers, got {num_heads} and {num_layers}")
        self.num_heads, self.num_layers = num_heads, num_layers
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        # Zero-initialised blocks start as the identity: every head first predicts like the base.
        self.res_weight = nn.Parameter(torch.zeros(num_heads, num_layers, hidden_size, hidden_size))
        self.res_bias = nn.Parameter(torch.zeros(num_heads, num_layers, hidden_size))
        self.out_weight = nn.Parameter(torch.zeros(num_heads, vocab_size, hidden_size)) if output_layer else None

    @property
    def has_output_layer(self) -> bool:
        return self.out_weight is not None

    def features(self, hidden: torch.Tensor, count: int | None = None) -> torch.Tensor:
        """[N, hidden] -> [count, N, hidden] after the first ``count`` heads' residual blocks."""
        count = count or self.num_heads
        x = hidden.unsqueeze(0).expand(count, *hidden.shape)
        for layer in range(self.num_layers):
            w = self.res_weight[:count, layer]
            b = self.res_bias[:count, layer].unsqueeze(1)
            x = x + F.silu(torch.baddbmm(b, x, w.transpose(1, 2)))
        return x

    def forward(self, hidden: torch.Tensor, lm_head: torch.Tensor | None = None, count: int | None = None) -> torch.Tensor:
        """Logits [count, N, vocab] of the first ``count`` heads (default all) for hidden states
        [N, hidden]; ``lm_head`` is the base model's output matrix, used when the heads have no
        output layer of their own."""
        x = self.features(hidden, count)
        if self.out_weight is not None:
            return torch.bmm(x, self.out_weight[: x.shape[0]].transpose(1, 2))
        if lm_head is None:
            raise ValueError("these heads reuse the base lm_head; pass it")
        return F.linear(x, lm_head)

    def init_output_from(self, lm_head: torch.Tensor) -> None:
        if self.out_weight is not None:
            with torch.no_grad():
                self.out_weight.copy_(lm_head.to(self.out_weight.dtype).unsqueeze(0).expand_as(self.out_weight))

    def state_dict_published(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for h in range(self.num_heads):
            for layer in range(self.num_layers):
                tensors[f"{h}.{layer}.linear.weight"] = self.res_weight[h, layer].detach().contiguous()
                tensors[f"{h}.{layer}.linear.bias"] = self.res_bias[h, layer].detach().contiguous()
            if self.out_weight is not None:
                tensors[f"{h}.{self.num_layers}.weight"] = self.out_weight[h].detach().contiguous()
        return tensors

    @classmethod
    def from_published(cls, tensors: dict[str, torch.Tensor], vocab_size: int | None = None) -> "MedusaHeads":
        """Build heads from per-head tensors; the head and layer counts come from the tensors."""
        found: dict[tuple[int, int, str], torch.Tensor] = {}
        for key, value in tensors.items():
            match = _KEY.match(key)
            if match:
                found[(int(match[1]), int(match[2]), match[3])] = value
        if not found:
            raise UserError("the head checkpoint holds no Medusa head tensors ({h}.{l}.linear.weight ...)")
        num_heads = 1 + max(h for h, _, _ in found)
        num_layers = 1 + max((layer for _, layer, kind in found if kind != "weight"), default=-1)
        output_layer = any(kind == "weight" for _, _, kind in found)
        any_tensor = next(iter(found.values()))
        hidden = any_tensor.shape[-1]
        if output_layer:
            vocab_size = next(v.shape[0] for (_, _, kind), v in found.items() if kind == "weight")
        heads = cls(num_heads, num_layers, hidden, vocab_size or 0, output_layer)
        with torch.no_grad():
            for h in range(num_heads):
                for layer in range(num_layers):
                    heads.res_weight[h, layer].copy_(_need(found, h, layer, "linear.weight"))
                    if (h, layer, "linear.bias") in found:  # some checkpoints have bias-free blocks
                        heads.res_bias[h, layer].copy_(found[(h, layer, "linear.bias")])
                if output_layer:
                    heads.out_weight[h].copy_(_need(found, h, num_layers, "weight"))
        return heads


def _need(found: dict, h: int, layer: int, kind: str) -> torch.Tensor:
    if (h, layer, kind) not in found:
        raise UserError(f"the head checkpoint lacks tensor {h}.{layer}.{kind}; is it complete?")
    return found[(h, layer, kind)]


def save_heads(heads: MedusaHeads, output_dir: str | Path, *, base_model: str, extra: dict | None = None) -> Path:
    """Write ``medusa_lm_head.safetensors`` and ``config.json`` in the published layout."""
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().cpu() for k, v in heads.state_dict_published().items()}, str(output_dir / WEIGHTS_FILE))
    config = {
        "medusa_num_heads": heads.num_heads,
        "medusa_num_layers": heads.num_layers,
        "hidden_size": heads.hidden_size,
        "vocab_size": heads.vocab_size,
        "base_model_name_or_path": base_model,
    }
    if not heads.has_output_layer:
        config["version"] = "2"
    config.update(extra or {})
    (output_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return output_dir


def load_heads(heads_dir: str | Path, vocab_size: int) -> MedusaHeads:
    """Load heads from a checkpoint folder in any published layout (.safetensors or .pt,
    with or without output layers, ModelOpt prefix)."""
    return MedusaHeads.from_published(read_head_tensors(heads_dir), vocab_size=vocab_size)


def read_head_tensors(heads_dir: str | Path) -> dict[str, torch.Tensor]:
    """Head tensors under canonical names, whatever the published layout (see ``checkpoint``)."""
    from medusa_runtime.engine.checkpoint import load_heads as load_checkpoint

    _, tensors = load_checkpoint(heads_dir)
    return tensors


def save_token_counts(output_dir: str | Path, counts: torch.Tensor) -> None:
    """How often each token id was a training target, for choosing a draft vocabulary later."""
    from safetensors.torch import save_file

    save_file({"counts": counts.to(torch.int64).cpu().contiguous()}, str(Path(output_dir) / TOKEN_COUNTS_FILE))


def draft_vocabulary(heads_dir: str | Path, size: int, vocab_size: int) -> tuple[torch.Tensor, float]:
    """The ``size`` tokens most often seen as training targets, as ascending ids, and the share
    of training targets they cover.

    The heads then rank only these tokens, which cuts the output rows a tree step reads; the
    base model still verifies every proposal, so a smaller draft vocabulary can only lower
    acceptance, never change what decoding emits."""
    from safetensors.torch import load_file

    if not 1 <= size <= vocab_size:
        raise UserError(f"the draft vocabulary must hold between 1 and {vocab_size} tokens, got {size}")
    path = Path(heads_dir) / TOKEN_COUNTS_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing: only heads trained by train-heads record token counts; "
                        "retrain them or use the full vocabulary")
    counts = load_file(str(path)).get("counts")
    if counts is None or counts.shape != (vocab_size,):
        raise UserError(f"{path} does not hold counts for a {vocab_size}-token vocabulary; "
                        "were these heads trained for another base model?")
    # A stable sort gives ties in count to the lower id, so the choice is the same everywhere.
    tokens = torch.sort(-counts, stable=True).indices[:size].sort().values
    coverage = float(counts[tokens].sum()) / max(1, int(counts.sum()))
    return tokens, coverage
