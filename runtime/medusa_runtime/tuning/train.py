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

from medusa_common.contract import UserError
from medusa_runtime.engine.decoding import MedusaDecoder
from medusa_runtime.engine.heads import MedusaHeads, save_heads, save_token_counts
from medusa_runtime.engine.model import LlamaModel, resolve_device
from medusa_runtime.engine.text import TextCodec
from medusa_runtime.tuning.smollm2 import cache_root

log = logging.getLogger(__name__)

IGNORE = -100
GENERATION_BATCH = 256  # sequences decoded together on a GPU (the CPU decodes one at a time)
HIDDEN_BATCH = 32  # sequences per forward pass when collecting hidden states on a GPU
# A model-written prompt starts with this many words of a given prompt, so the new prompts stay
# near the given subjects while the sampled rest makes them differ.
SEED_WORDS = 3


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


def _cached_json(kind: str, key_parts: list, compute) -> dict:
    """``compute()``'s JSON result, kept under the cache folder by a digest of ``key_parts``."""
    key = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    path = cache_root() / "datasets" / f"{kind}-{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    data = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
    return data


def greedy_sequences(
    model: LlamaModel,
    codec: TextCodec,
    model_dir: str | Path,
    prompts: Sequence[str],
    max_new_tokens: int,
) -> Sequences:
    """The base model's greedy answers to ``prompts``, cached on disk by model, prompts and length."""

    def answer() -> dict:
        eos = sorted(codec.eos_ids)
        prompt_ids = [codec.encode_chat(p) for p in prompts]
        start = time.perf_counter()
        if model.device.type == "cuda":
            answers = []
            for first in range(0, len(prompt_ids), GENERATION_BATCH):
                answers += batched_generate(model, prompt_ids[first:first + GENERATION_BATCH], max_new_tokens, set(eos))
        else:
            decoder = MedusaDecoder(model)
            answers = [decoder.generate(p, max_new_tokens, eos).tokens for p in prompt_ids]
        log.info("answered %d prompts in %.0f s", len(prompts), time.perf_counter() - start)
        return {
            "ids": [p + a + ([eos[0]] if eos and len(a) < max_new_tokens else []) for p, a in zip(prompt_ids, answers)],
            "prompt_lengths": [len(p) for p in prompt_ids],
        }

    key = [model_fingerprint(model_dir), list(prompts), max_new_tokens, str(model.dtype), model.device.type]
    data = _cached_json("self-distill", key, answer)
    return Sequences(data["ids"], data["prompt_lengths"])


def model_written_prompts(
    model: LlamaModel,
    codec: TextCodec,
    model_dir: str | Path,
    seeds: Sequence[str],
    count: int,
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
) -> list[str]:
    """Up to ``count`` new user prompts written by the base model itself.

    Each starts with the first words of a seed prompt inside a user turn, and the model samples
    the rest (temperature 1) until it ends the turn. Unfinished and duplicate prompts are
    dropped. Widens the distillation text far beyond a hand-written prompt set, which is what
    lets heads generalise instead of memorising it.
    """
    if count < 1:
        return []
    if not seeds:
        raise UserError("writing prompts needs at least one seed prompt")

    def write() -> dict:
        eos = set(codec.eos_ids)
        starts = [" ".join(seeds[i % len(seeds)].split()[:SEED_WORDS]) for i in range(count)]
        generator = torch.Generator(device=model.device).manual_seed(seed)
        batch = GENERATION_BATCH if model.device.type == "cuda" else 8
        written: list[str] = []
        for first in range(0, count, batch):
            chunk = starts[first:first + batch]
            endings = batched_generate(model, [codec.encode_user_turn_start(s) for s in chunk], max_new_tokens, eos,
                                       temperature=1.0, generator=generator, keep_unfinished=False)
            written += [f"{s}{codec.decode(e)}".strip() if e is not None else "" for s, e in zip(chunk, endings)]
        return {"prompts": written}

    key = [model_fingerprint(model_dir), list(seeds), count, max_new_tokens, seed, str(model.dtype), model.device.type]
    written = _cached_json("model-written-prompts", key, write)["prompts"]
    given = set(seeds)
    unique = [p for p in dict.fromkeys(written) if len(p.split()) > SEED_WORDS and p not in given]
    log.info("the base model wrote %d usable prompts out of %d", len(unique), count)
    return unique


@torch.no_grad()
def batched_generate(
    model: LlamaModel,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos: set[int],
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    keep_unfinished: bool = True,
) -> list[list[int] | None]:
    """Continuations of several prompts at once (left-padded): greedy at temperature 0, else
    sampled. A continuation that reaches ``max_new_tokens`` without an end token is kept, or
    is None when ``keep_unfinished`` is off.

    Batched matmuls round slightly differently from batch-1 decoding, so a greedy answer can
    differ from ``MedusaDecoder`` output after a near-tie; as training text that does not matter.
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
    def choose(logits: torch.Tensor) -> torch.Tensor:
        if temperature <= 0:
            return logits.argmax(-1)
        probabilities = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probabilities, 1, generator=generator)[:, 0]

    hidden = model.forward(tokens, positions, mask, cache, slots[:width])
    following = choose(model.logits(hidden[:, -1]))
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
        following = choose(model.logits(hidden[:, 0]))
        position += 1
    return [a if keep_unfinished or finished else None for a, finished in zip(answers, done)]


def hidden_and_targets(model: LlamaModel, seqs: Sequences, num_heads: int,
                       batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states [N, hidden] at every position whose next token is part of an answer, and
    targets [N, heads]: for head k the token k+2 positions ahead (IGNORE past the end). A
    sequence's rows are consecutive, so row i+k+1 is the position just before head k's target
    at row i (``teacher_rows``).

    Sequences go through the model ``batch`` at a time, right-padded: with causal attention the
    padding never reaches a real position's hidden state."""
    batch = batch or (HIDDEN_BATCH if model.device.type == "cuda" else 1)
    usable = sorted((pair for pair in zip(seqs.ids, seqs.prompt_lengths) if len(pair[0]) - pair[1] >= 2),
                    key=lambda pair: len(pair[0]))
    hiddens, targets = [], []
    for first in range(0, len(usable), batch):
        group = usable[first:first + batch]
        width = len(group[-1][0])
        padded = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in group], device=model.device)
        hidden_rows = model.hidden_states(padded)
        for row, (ids, prompt_len) in enumerate(group):
            tokens = padded[row, : len(ids)]
            positions = torch.arange(prompt_len - 1, len(ids) - 1, device=model.device)
            ahead = positions.unsqueeze(1) + torch.arange(2, num_heads + 2, device=model.device)
            target = torch.where(ahead < len(ids), tokens[ahead.clamp(max=len(ids) - 1)], IGNORE)
            hiddens.append(hidden_rows[row, positions].float())
            targets.append(target)
    if not hiddens:
        raise UserError("the base model gave no answers longer than one token; use more or longer prompts")
    return torch.cat(hiddens), torch.cat(targets)


def teacher_rows(targets: torch.Tensor) -> torch.Tensor:
    """[N, heads] for ``hidden_and_targets``' targets: the row whose hidden state the base model
    turns into head k's target at row i (i+k+1, the same sequence's next positions), -1 where
    there is no target."""
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1)
    ahead = rows + torch.arange(1, targets.shape[1] + 1, device=targets.device)
    return torch.where(targets != IGNORE, ahead, -1)


def head_losses(logits: torch.Tensor, targets: torch.Tensor, teacher: torch.Tensor | None,
                distillation: float) -> torch.Tensor:
    """[heads] mean losses over the positions with a target: cross-entropy against the greedy
    target, mixed with weight ``distillation`` with cross-entropy against ``teacher``, the base
    model's own distribution for that token ([heads, B, vocab] probabilities; soft targets tell
    the heads which tokens came close, which a tree's lower-ranked nodes rely on).

    ``logits`` [heads, B, vocab]; ``targets`` [B, heads]."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    target = targets.T
    valid = target != IGNORE
    loss = -log_probs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    if teacher is not None and distillation > 0:
        loss = (1 - distillation) * loss - distillation * (teacher * log_probs).sum(dim=-1)
    return (loss * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)


@torch.no_grad()
def teacher_distribution(lm_head: torch.Tensor, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[heads, B, vocab]: the base model's next-token probabilities at ``rows`` [B, heads] (any
    row for -1: those positions carry no loss)."""
    return torch.softmax(hidden[rows.clamp(min=0).T] @ lm_head.T, dim=-1)


def target_ranks(heads: MedusaHeads, lm_head: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor,
                 limit: int, batch: int = 512, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """[N, heads] on the CPU: where each target ranks among its head's logits (0 = the best),
    ``limit`` for any rank at or past it, -1 where there is no target (IGNORE). With ``tokens``
    (a draft vocabulary, ascending ids) heads rank only those, and a target outside them is
    ranked ``limit``."""
    row_of = None
    if tokens is not None:
        tokens = tokens.to(hidden.device)
        row_of = torch.full((lm_head.shape[0],), -1, dtype=torch.long, device=hidden.device)
        row_of[tokens] = torch.arange(tokens.shape[0], device=hidden.device)
    ranks = []
    with torch.inference_mode():
        for start in range(0, hidden.shape[0], batch):
            logits = heads(hidden[start:start + batch], lm_head)  # [heads, B, vocab]
            target = targets[start:start + batch].T  # [heads, B]
            column = target.clamp(min=0)
            if row_of is not None:
                logits, column = logits.index_select(-1, tokens), row_of[column]
            score = logits.gather(-1, column.clamp(min=0).unsqueeze(-1))
            rank = (logits > score).sum(dim=-1).clamp(max=limit)
            rank = torch.where(column >= 0, rank, limit)
            ranks.append(torch.where(target != IGNORE, rank, -1).T.cpu())
    return torch.cat(ranks)


def topk_accuracy(ranks: torch.Tensor, k: int) -> list[list[float]]:
    """accuracy[h][r]: how often head h's r-th ranked token is the right one (``target_ranks``)."""
    counts = (ranks >= 0).sum(dim=0).clamp(min=1)
    return [[float((ranks[:, h] == r).sum()) / float(counts[h]) for r in range(k)] for h in range(ranks.shape[1])]


def train_heads(
    base_dir: str | Path,
    output_dir: str | Path,
    *,
    num_heads: int = 4,
    num_layers: int = 1,
    output_layer: bool = False,
    prompts: Sequence[str] | None = None,
    model_written: int = 0,
    styles: int = 1,
    max_new_tokens: int = 256,
    epochs: int = 3,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    loss_decay: float = 0.8,
    distillation: float = 0.0,
    device: str = "auto",
    dtype: str = "float32",
    seed: int = 0,
) -> dict:
    """Train heads on the base model's own greedy answers and save them in the published layout.

    The prompt set is ``prompts`` (default: the packaged training prompts) plus ``model_written``
    prompts the base model writes from them, each asked in ``styles`` answer styles.
    ``distillation`` (0-1) weighs the base model's own next-token distribution as a soft target
    against its greedy token."""
    from medusa_runtime.tuning.prompts import check_answer_styles, training_prompts, with_answer_styles

    if num_heads < 1 or num_layers < 1 or epochs < 1 or batch_size < 1:
        raise UserError("num-heads, num-layers, epochs and batch-size must all be at least 1")
    if not 0.0 <= distillation <= 1.0:
        raise UserError(f"distillation is a weight from 0 to 1, got {distillation}")
    if model_written < 0:
        raise UserError(f"the number of model-written prompts cannot be negative, got {model_written}")
    check_answer_styles(styles)
    start = time.perf_counter()
    torch.manual_seed(seed)
    dev = resolve_device(device)
    model = LlamaModel.load(base_dir, dtype=dtype, device=dev)
    codec = TextCodec(base_dir)
    prompts = list(prompts) if prompts is not None else training_prompts()
    written = model_written_prompts(model, codec, base_dir, prompts, model_written, seed=seed)
    prompts = with_answer_styles(prompts + written, styles)
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
    rows = teacher_rows(targets) if distillation > 0 else None
    loss_value = float("nan")
    for epoch in range(epochs):
        order = torch.randperm(hidden.shape[0], device=dev)
        running = 0.0
        for step in range(steps_per_epoch):
            index = order[step * batch_size:(step + 1) * batch_size]
            logits = heads(hidden[index], lm_head)  # [heads, B, vocab]
            teacher = teacher_distribution(lm_head, hidden, rows[index]) if rows is not None else None
            loss = (head_losses(logits, targets[index], teacher, distillation) * weights).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running += loss.item()
        loss_value = running / steps_per_epoch
        log.info("epoch %d/%d: weighted loss %.4f", epoch + 1, epochs, loss_value)
    heads.eval()
    accuracy = topk_accuracy(target_ranks(heads, lm_head, hidden, targets, limit=1), k=1)
    save_heads(heads, output_dir, base_model=str(base_dir), extra={"training": {
        "method": "self-distillation (Medusa-1, frozen base)",
        "prompts": len(prompts), "modelWrittenPrompts": len(written), "positions": int(hidden.shape[0]),
        "epochs": epochs,
        "maxNewTokens": max_new_tokens, "learningRate": learning_rate, "distillation": distillation,
    }})
    first = targets[:, 0]  # head 0's targets: every answer token but the first
    save_token_counts(output_dir, torch.bincount(first[first != IGNORE].cpu(), minlength=model.cfg.vocab_size))
    return {
        "headsDir": str(output_dir),
        "numHeads": num_heads,
        "numLayers": num_layers,
        "outputLayer": output_layer,
        "prompts": len(prompts),
        "modelWrittenPrompts": len(written),
        "trainingPositions": int(hidden.shape[0]),
        "epochs": epochs,
        "distillation": distillation,
        "finalLoss": round(loss_value, 4),
        "trainTop1Accuracy": [round(row[0], 4) for row in accuracy],
        "device": str(dev),
        "seconds": round(time.perf_counter() - start, 1),
    }
