"""`medusa-builder train-heads`: Medusa-1 self-distillation of heads for a frozen base model."""

from __future__ import annotations

import argparse
from typing import Any

from ..build.tuning import train_heads
from . import add_flag, add_result_argument


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-heads", help="train Medusa heads on the base model's own greedy answers",
        description="Train Medusa heads (Medusa-1: frozen base, head losses weighted by depth) on the base "
                    "model's greedy answers to a prompt set, and save them in the published layout "
                    "(medusa_lm_head.safetensors + config.json).")
    add_flag(parser, "--base-dir", "--base", required=True, metavar="DIR", help="base model folder (Hugging Face layout)")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the trained heads")
    parser.add_argument("--num-heads", type=int, default=4, metavar="N", help="heads to train (default 4)")
    parser.add_argument("--num-layers", type=int, default=1, metavar="N", help="residual layers per head (default 1)")
    parser.add_argument("--output-layer", action="store_true",
                        help="give each head its own output layer (default: reuse the base lm_head)")
    parser.add_argument("--prompts", metavar="FILE", help="prompt file, one per line (default: the packaged set)")
    parser.add_argument("--max-prompts", type=int, metavar="N", help="use only the first N prompts")
    parser.add_argument("--styles", type=int, default=1, metavar="N",
                        help="ask each prompt in N answer styles (1-4; more varied training text, default 1)")
    parser.add_argument("--model-written-prompts", type=int, default=0, metavar="N",
                        help="add up to N prompts the base model writes itself, each begun with the first words "
                             "of a given prompt (sampled; far more varied training text, default 0)")
    parser.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="answer length (default 256)")
    parser.add_argument("--epochs", type=int, default=3, metavar="N", help="passes over the data (default 3)")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="positions per step (default 256)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, metavar="LR", help="peak AdamW rate (default 1e-3)")
    parser.add_argument("--loss-decay", type=float, default=0.8, metavar="W", help="head k's loss weight is W**k")
    parser.add_argument("--distillation", type=float, default=0.0, metavar="W",
                        help="weight (0-1) of the base model's own next-token distribution as a soft target "
                             "beside its greedy token (default 0: greedy tokens only)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="base model dtype (default float32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_result_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return train_heads(
        args.base_dir, args.output, prompts_file=args.prompts, max_prompts=args.max_prompts,
        num_heads=args.num_heads, num_layers=args.num_layers, output_layer=args.output_layer,
        model_written_prompts=args.model_written_prompts, styles=args.styles, max_new_tokens=args.max_new_tokens,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        loss_decay=args.loss_decay, distillation=args.distillation, device=args.device, dtype=args.dtype,
        seed=args.seed,
    )
