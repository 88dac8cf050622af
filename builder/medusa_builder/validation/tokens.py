"""Counting output tokens with the served model's tokenizer.

Tokens/s must count what the model produced, in the model's own tokens: the texts that come back
from the server are re-encoded with the tokenizer (``tokenizer.json`` through the ``tokenizers``
library when present, else ``transformers.AutoTokenizer``), without special tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from medusa_common.contract import UserError

TokenCounter = Callable[[str], int]

# Weights and engines in a model folder: a tokenizer needs none of them, so they are not fetched.
NOT_TOKENIZER_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.engine", "*.onnx")


def load_token_counter(folder: str | Path) -> TokenCounter:
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"the tokenizer folder {path} does not exist; give the model folder that holds "
                        "tokenizer.json or the files AutoTokenizer reads")
    tokenizer_json = path / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            from tokenizers import Tokenizer
        except ImportError:
            Tokenizer = None
        if Tokenizer is not None:
            try:
                fast = Tokenizer.from_file(str(tokenizer_json))
            except Exception as exc:  # noqa: BLE001 - the library raises a bare Exception
                raise UserError(f"{tokenizer_json} could not be read as a tokenizer ({exc})") from None
            return lambda text: len(fast.encode(text, add_special_tokens=False).ids) if text else 0
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError(f"{path} has no tokenizer.json and transformers is not installed to read it") from None
    try:
        slow = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - transformers raises many error types for bad folders
        raise UserError(f"{path} could not be loaded as a tokenizer ({exc})") from None
    return lambda text: len(slow.encode(text, add_special_tokens=False)) if text else 0
