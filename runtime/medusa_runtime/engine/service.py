"""Text in, text out: the reference runtime as the serving model uses it (no Triton types here)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medusa_common.contract import UserError
from medusa_common.tree import normalise_tree
from medusa_runtime.engine.decoding import Generation, MedusaDecoder
from medusa_runtime.engine.heads import draft_vocabulary, load_heads
from medusa_runtime.engine.model import LlamaModel, resolve_device
from medusa_runtime.engine.text import TextCodec

log = logging.getLogger(__name__)


@dataclass
class Completion:
    text: str
    generation: Generation

    @property
    def output_tokens(self) -> int:
        return len(self.generation.tokens)

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens over draft tokens verified (0 without heads)."""
        drafts = self.generation.draft_tokens
        return self.generation.accepted_draft_tokens / drafts if drafts else 0.0


class ReferenceService:
    def __init__(
        self,
        base_dir: str | Path,
        heads_dir: str | Path | None = None,
        tree: Sequence[Sequence[int]] | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        draft_vocab: int | None = None,
    ):
        """``draft_vocab``: the heads propose only their training's N most frequent tokens
        (``heads.draft_vocabulary``); None lets them propose any token."""
        if draft_vocab is not None and heads_dir is None:
            raise UserError("a draft vocabulary was given without Medusa heads; give heads_dir or drop it")
        dev = resolve_device(device)
        self.model = LlamaModel.load(base_dir, dtype=dtype, device=dev)
        self.codec = TextCodec(base_dir)
        heads, draft_tokens = None, None
        vocab_size = self.model.cfg.vocab_size
        if heads_dir is not None:
            heads = load_heads(heads_dir, vocab_size)
            tree = normalise_tree(tree, heads.num_heads)
            if draft_vocab is not None:
                draft_tokens, _ = draft_vocabulary(heads_dir, draft_vocab, vocab_size)
        self.tree = list(tree or []) if heads is not None else []
        self.num_heads = heads.num_heads if heads is not None else 0
        self.decoder = MedusaDecoder(self.model, heads, self.tree, draft_tokens=draft_tokens)
        draft = "all tokens" if draft_tokens is None else f"{draft_tokens.shape[0]} tokens"
        log.info("reference runtime ready on %s (%s, Triton kernels %s, %d heads, %d tree nodes, draft vocabulary: %s)",
                 dev, str(self.model.dtype).removeprefix("torch."), "on" if self.model.kernels else "off",
                 self.num_heads, len(self.tree), draft)

    @property
    def tree_depth(self) -> int:
        return max((len(p) for p in self.tree), default=0)

    def complete(self, text: str, max_tokens: int, end_id: int | None = None) -> Completion:
        if not text:
            raise UserError("text_input is empty; send the prompt text")
        prompt = self.codec.encode_chat(text)
        eos = [end_id] if end_id is not None and end_id >= 0 else sorted(self.codec.eos_ids)
        generation = self.decoder.generate(prompt, max_tokens, eos)
        return Completion(self.codec.decode(generation.tokens), generation)
