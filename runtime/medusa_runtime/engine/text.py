"""Tokenizer access: chat-formatted prompts in, token ids out, and the model's end tokens."""

from __future__ import annotations

import json
from pathlib import Path

from medusa_common.contract import UserError


class TextCodec:
    def __init__(self, model_dir: str | Path):
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load a tokenizer from {model_dir}: {exc}") from None
        self.eos_ids = frozenset(end_token_ids(model_dir, self.tokenizer.eos_token_id))

    def encode_chat(self, prompt: str) -> list[int]:
        """The prompt as one user turn with the generation prompt appended (plain text if the
        tokenizer has no chat template)."""
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return list(ids)
        return self.tokenizer.encode(prompt)

    def encode_user_turn_start(self, text: str) -> list[int]:
        """A chat whose user turn begins with ``text`` and is left open, so the model goes on
        writing the user's message (plain text if the tokenizer has no chat template)."""
        if not getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.encode(text)
        marker = "\x00"
        rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
        return self.tokenizer.encode(rendered.split(marker)[0] + text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def end_token_ids(model_dir: str | Path, tokenizer_eos: int | None) -> set[int]:
    """End-of-sequence ids from generation_config.json and the tokenizer."""
    ids: set[int] = set()
    path = Path(model_dir) / "generation_config.json"
    if path.is_file():
        value = json.loads(path.read_text()).get("eos_token_id")
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    if tokenizer_eos is not None:
        ids.add(tokenizer_eos)
    return ids
