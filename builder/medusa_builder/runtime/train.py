"""Medusa-1 head training by self-distillation.

The frozen base model answers a prompt set greedily; those answers are the training text, so
the heads learn to predict exactly what greedy verification will accept. Hidden states are
computed once per sequence and the heads are trained on them alone: each step costs one
heads-plus-lm_head pass, not a pass through the base model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError
from .decoding import MedusaDecoder
from .heads import MedusaHeads, save_heads
from .model import LlamaModel, resolve_device
from .smollm2 import cache_root
from .text import TextCodec

log = logging.getLogger(__name__)

IGNORE = -100
GENERATION_BATCH = 64


@dataclass
class Sequences:
    """Prompt + greedy answer token ids, and where each answer starts."""

    ids: list[list[int]]
    prompt_lengths: list[int]


def model_fingerprint(model_dir: str | Path) -> str:
    """Identifies a model folder's contents cheaply: its config plus weight file names and sizes."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    for file in sorted(model_dir.glob("*.safetensors")):
        digest.update(f"{file.name}:{file.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def greedy_sequences(
    model: LlamaModel,
    codec: TextCodec,
    model_dir: str | Path,
    prompts: Sequence[str],
    max_new_tokens: int,
) -> Sequences:
    """The base model's greedy answers to ``prompts``, cached on disk by model, prompts and length."""
    key = hashlib.sha256(
        json.dumps([model_fingerprint(model_dir), list(prompts), max_new_tokens, str(model.dtype), model.device.type]).encode()
    ).hexdigest()[:16]
    path = cache_root() / "datasets" / f"self-distill-{key}.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return Sequences(data["ids"], data["prompt_lengths"])
    eos = sorted(codec.eos_ids)
    prompt_ids = [codec.encode_chat(p) for p in prompts]
    batch = GENERATION_BATCH if model.device.type == "cuda" else 1
    start = time.perf_counter()
    ids, lengths = [], []
    if batch == 1:
        decoder = MedusaDecoder(model)
        answers = [decoder.generate(p, max_new_tokens, eos).tokens for p in prompt_ids]
    else:
        answers = []
        for first in range(0, len(prompt_ids), batch):
            answers += batched_greedy(model, prompt_ids[first:first + batch], max_new_tokens, set(eos))
    for prompt, answer in zip(prompt_ids, answers):
        ids.append(prompt + answer + ([eos[0]] if eos and len(answer) < max_new_tokens else []))
        lengths.append(len(prompt))
    log.info("answered %d prompts in %.0f s", len(prompts), time.perf_counter() - start)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"ids": ids, "prompt_lengths": lengths}))
    tmp.replace(path)
    return Sequences(ids, lengths)


@torch.no_grad()
def batched_greedy(model: LlamaModel, prompts: list[list[int]], max_new_tokens: int, eos: set[int]) -> list[list[int]]:
    """Greedy answers for several prompts at once (left-padded), for distillation data on a GPU.

    Batched matmuls round slightly differently from batch-1 decoding, so an answer can differ
    from ``MedusaDecoder`` output after a near-tie; as training text that does not matter.
    """
    device, size = model.device, len(prompts)
    width = max(len(p) for p in prompts)
    total = width + max_new_tokens
    pad = torch.tensor([width - len(p) for p in prompts], device=device)
    tokens = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    slots = torch.arange(total, device=device)
    key_valid = slots.unsqueeze(0) >= pad.unsqueeze(1)  # [B, total]: padding is never attended to
    causal = slots[:width].unsqueeze(1) >= slots.unsqueeze(0)  # [width, total]
    mask = (causal.unsqueeze(0) & key_valid.unsqueeze(1)) | torch.eye(width, total, dtype=torch.bool, device=device)
    positions = (slots[:width].unsqueeze(0) - pad.unsqueeze(1)).clamp(min=0)
    cache = model.new_cache(total, batch=size)
    hidden = model.forward(tokens, positions, mask, cache, slots[:width])
    following = model.logits(hidden[:, -1]).argmax(-1)
    position = torch.tensor([len(p) for p in prompts], device=device)
    answers: list[list[int]] = [[] for _ in prompts]
    done = [False] * size
    for step in range(max_new_tokens):
        for row, token in enumerate(following.tolist()):
            if not done[row]:
                if token in eos:
                    done[row] = True
                else:
                    answers[row].append(token)
        if all(done):
            break
        slot = width + step
        step_mask = (key_valid & (slots <= slot)).unsqueeze(1)
        hidden = model.forward(following.unsqueeze(1), position.unsqueeze(1), step_mask, cache, slots[slot:slot + 1])
        following = model.logits(hidden[:, 0]).argmax(-1)
        position += 1
    return answers


def hidden_and_targets(model: LlamaModel, seqs: Sequences, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states [N, hidden] at every position whose next token is part of an answer, and
    targets [N, heads]: for head k the token k+2 positions ahead (IGNORE past the end)."""
    hiddens, targets = [], []
    for ids, prompt_len in zip(seqs.ids, seqs.prompt_lengths):
        if len(ids) - prompt_len < 2:
            continue
        tokens = torch.tensor(ids, dtype=torch.long, device=model.device)
        hidden = model.hidden_states(tokens.unsqueeze(0))[0]
        positions = torch.arange(prompt_len - 1, len(ids) - 1, device=model.device)
        ahead = positions.unsqueeze(1) + torch.arange(2, num_heads + 2, device=model.device)
        target = torch.where(ahead < len(ids), tokens[ahead.clamp(max=len(ids) - 1)], IGNORE)
        hiddens.append(hidden[positions].float())
        targets.append(target)
    if not hiddens:
        raise UserError("the base model gave no answers longer than one token; use more or longer prompts")
    return torch.cat(hiddens), torch.cat(targets)


def topk_accuracy(heads: MedusaHeads, lm_head: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor,
                  k: int = 10, batch: int = 512) -> list[list[float]]:
    """accuracy[h][r]: how often head h's r-th ranked token is the right one."""
    hits = torch.zeros(heads.num_heads, k, dtype=torch.float64)
    counts = torch.zeros(heads.num_heads, dtype=torch.float64)
    with torch.inference_mode():
        for start in range(0, hidden.shape[0], batch):
            logits = heads(hidden[start:start + batch], lm_head)
            ranked = logits.topk(k, dim=-1).indices  # [heads, B, k]
            target = targets[start:start + batch].T  # [heads, B]
            valid = target != IGNORE
            hits += ((ranked == target.unsqueeze(-1)) & valid.unsqueeze(-1)).sum(dim=1).double().cpu()
            counts += valid.sum(dim=1).double().cpu()
    return (hits / counts.clamp(min=1).unsqueeze(1)).tolist()


def train_heads(
    base_dir: str | Path,
    output_dir: str | Path,
    *,
    num_heads: int = 4,
    num_layers: int = 1,
    output_layer: bool = False,
    prompts: Sequence[str] | None = None,
    max_new_tokens: int = 256,
    epochs: int = 3,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    loss_decay: float = 0.8,
    device: str = "auto",
    dtype: str = "float32",
    seed: int = 0,
) -> dict:
    """Train heads on the base model's own greedy answers and save them in the published layout."""
    from .prompts import training_prompts

    if num_heads < 1 or num_layers < 1 or epochs < 1 or batch_size < 1:
        raise UserError("num-heads, num-layers, epochs and batch-size must all be at least 1")
    start = time.perf_counter()
    torch.manual_seed(seed)
    dev = resolve_device(device)
    model = LlamaModel.load(base_dir, dtype=dtype, device=dev)
    codec = TextCodec(base_dir)
    prompts = list(prompts) if prompts is not None else training_prompts()
    seqs = greedy_sequences(model, codec, base_dir, prompts, max_new_tokens)
    hidden, targets = hidden_and_targets(model, seqs, num_heads)
    log.info("training %d heads on %d positions from %d answers", num_heads, hidden.shape[0], len(seqs.ids))
    lm_head = model.lm_head.float()
    heads = MedusaHeads(num_heads, num_layers, model.cfg.hidden_size, model.cfg.vocab_size, output_layer).to(dev)
    heads.init_output_from(lm_head)
    optimiser = torch.optim.AdamW(heads.parameters(), lr=learning_rate, weight_decay=0.0)
    steps_per_epoch = math.ceil(hidden.shape[0] / batch_size)
    total_steps = steps_per_epoch * epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / max(1, total_steps // 20)) * 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )
    weights = torch.tensor([loss_decay**k for k in range(num_heads)], device=dev)
    loss_value = float("nan")
    for epoch in range(epochs):
        order = torch.randperm(hidden.shape[0], device=dev)
        running = 0.0
        for step in range(steps_per_epoch):
            index = order[step * batch_size:(step + 1) * batch_size]
            logits = heads(hidden[index], lm_head)  # [heads, B, vocab]
            target = targets[index]
            losses = torch.stack([
                F.cross_entropy(logits[k], target[:, k], ignore_index=IGNORE) if (target[:, k] != IGNORE).any()
                else logits[k].sum() * 0.0
                for k in range(num_heads)
            ])
            loss = (losses * weights).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running += loss.item()
        loss_value = running / steps_per_epoch
        log.info("epoch %d/%d: weighted loss %.4f", epoch + 1, epochs, loss_value)
    heads.eval()
    accuracy = topk_accuracy(heads, lm_head, hidden, targets, k=1)
    save_heads(heads, output_dir, base_model=str(base_dir), extra={"training": {
        "method": "self-distillation (Medusa-1, frozen base)",
        "prompts": len(prompts), "positions": int(hidden.shape[0]), "epochs": epochs,
        "maxNewTokens": max_new_tokens, "learningRate": learning_rate,
    }})
    return {
        "headsDir": str(output_dir),
        "numHeads": num_heads,
        "numLayers": num_layers,
        "outputLayer": output_layer,
        "prompts": len(prompts),
        "trainingPositions": int(hidden.shape[0]),
        "epochs": epochs,
        "finalLoss": round(loss_value, 4),
        "trainTop1Accuracy": [round(row[0], 4) for row in accuracy],
        "device": str(dev),
        "seconds": round(time.perf_counter() - start, 1),
    }
