"""Base greedy vs Medusa decoding, side by side on the same runtime, prompts and device.

Measures, at batch 1: tokens/s of plain greedy decoding and of Medusa tree decoding (trained
heads, calibrated or given tree), the speedup, accepted tokens per step, the cost of one step
of each, and checks that both produce identical tokens. Prints a table; ``--json-out`` keeps
the numbers.

    python benchmarks/medusa_speed.py --base MODEL_DIR --heads HEADS_DIR --calibrate 32 --calibrate 64
    python benchmarks/medusa_speed.py --base MODEL_DIR --heads HEADS_DIR --tree '[[0], [0, 0], [1]]'

For each tree, base and Medusa decoding alternate prompt by prompt. ``--draft-vocab N`` (repeatable,
0 = the full vocabulary) lets the heads propose only the N tokens their training saw most; the
trees are calibrated again for each size.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

from medusa_runtime.tuning.calibrate import calibrate_tree
from medusa_runtime.engine.decoding import MedusaDecoder
from medusa_runtime.engine.heads import draft_vocabulary, load_heads
from medusa_runtime.engine.model import LlamaModel, resolve_device
from medusa_runtime.tuning.prompts import evaluation_prompts, read_prompt_file
from medusa_runtime.engine.text import TextCodec
from medusa_common.tree import CALIBRATION_METHODS, normalise_tree, parse_choices


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def measure_pairs(base: MedusaDecoder, medusa: MedusaDecoder, prompts: list[list[int]], max_new_tokens: int,
                  eos: list[int]) -> tuple[list, list]:
    """Base then Medusa on each prompt in turn, so a change in machine load hits both alike."""
    base_runs, medusa_runs = [], []
    for ids in prompts:
        base_runs.append(base.generate(ids, max_new_tokens, eos))
        medusa_runs.append(medusa.generate(ids, max_new_tokens, eos))
    return base_runs, medusa_runs


def summarise(base: list, medusa: list) -> dict:
    """Totals over all prompts: tokens/s of each, speedup, tokens per step, step costs."""
    base_tokens = sum(len(g.tokens) for g in base)
    medusa_tokens = sum(len(g.tokens) for g in medusa)
    base_seconds = sum(g.seconds for g in base)
    medusa_seconds = sum(g.seconds for g in medusa)
    base_rate, medusa_rate = base_tokens / base_seconds, medusa_tokens / medusa_seconds
    return {
        "prompts": len(base),
        "identical": sum(b.tokens == m.tokens for b, m in zip(base, medusa)),
        "outputTokens": base_tokens,
        "baseTokensPerSecond": base_rate,
        "medusaTokensPerSecond": medusa_rate,
        "speedup": medusa_rate / base_rate,
        "meanAcceptedTokens": medusa_tokens / sum(g.steps for g in medusa),
        "baseStepMs": 1000 * base_seconds / sum(g.steps for g in base),
        "medusaStepMs": 1000 * medusa_seconds / sum(g.steps for g in medusa),
        "perPromptSpeedupMedian": statistics.median(
            (len(m.tokens) / m.seconds) / (len(b.tokens) / b.seconds) for b, m in zip(base, medusa) if b.tokens
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="base model folder (Hugging Face layout)")
    parser.add_argument("--heads", required=True, help="Medusa heads folder")
    parser.add_argument("--tree", action="append", default=[], help="explicit tree as JSON (repeatable)")
    parser.add_argument("--tree-file", action="append", default=[],
                        help="JSON file with a 'tree' field, as calibrate --output writes (repeatable)")
    parser.add_argument("--calibrate", action="append", type=int, default=[], metavar="NODES",
                        help="calibrate a tree of this many nodes first (repeatable)")
    parser.add_argument("--calibration-method", default="joint", choices=CALIBRATION_METHODS,
                        help="how --calibrate builds its trees (default joint)")
    parser.add_argument("--prompts", help="prompt file (default: the packaged evaluation prompts, which neither "
                                          "training nor calibration uses)")
    parser.add_argument("--num-prompts", type=int, default=20, help="at most this many prompts (default 20)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--compile", action="store_true", help="torch.compile each decoding step (both decoders)")
    parser.add_argument("--kernels", default="auto", choices=("auto", "on", "off"),
                        help="decode through the batch-invariant Triton kernels (auto: bfloat16 on CUDA)")
    parser.add_argument("--draft-vocab", action="append", type=int, default=[], metavar="N",
                        help="heads propose only their training's N most frequent tokens (repeatable; 0: all)")
    parser.add_argument("--json-out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    if not (args.tree or args.tree_file or args.calibrate):
        parser.error("give at least one --tree, --tree-file or --calibrate")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = LlamaModel.load(args.base, dtype=args.dtype, device=device, kernels=args.kernels)
    codec = TextCodec(args.base)
    heads = load_heads(args.heads, model.cfg.vocab_size)
    # Each draft vocabulary read once, before any timing, so a bad size or missing counts fail fast.
    drafts = {size: draft_vocabulary(args.heads, size, model.cfg.vocab_size) if size else (None, 1.0)
              for size in args.draft_vocab or [0]}
    given: list[tuple[list, float | None]] = [(parse_choices(t), None) for t in args.tree]
    for path in args.tree_file:
        calibration = json.loads(Path(path).read_text())
        given.append((calibration["tree"], calibration.get("expectedAcceptedTokens")))
    trees: list[tuple[list, float | None, int]] = []  # (tree, expected tokens per step, draft vocabulary)
    for draft in drafts:
        trees += [(tree, expected, draft) for tree, expected in given]
        for nodes in args.calibrate:
            calibration = calibrate_tree(args.base, args.heads, num_nodes=nodes, device=str(device),
                                         dtype=args.dtype, method=args.calibration_method, draft_vocab=draft or None)
            trees.append((calibration["tree"], calibration["expectedAcceptedTokens"], draft))
    texts = read_prompt_file(args.prompts) if args.prompts else evaluation_prompts()
    prompts = [codec.encode_chat(t) for t in texts[: args.num_prompts]]
    eos = sorted(codec.eos_ids)

    def warmed_up(decoder: MedusaDecoder) -> MedusaDecoder:
        """Caches and CUDA graphs for every prompt made first, as in a server that has been up a while."""
        for ids in prompts:
            decoder.prepare(len(ids), args.max_new_tokens)
        decoder.generate(prompts[0], args.max_new_tokens, eos)
        return decoder

    base = warmed_up(MedusaDecoder(model, compile_step=args.compile))
    rows = []
    for choices, expected, draft in trees:
        choices = normalise_tree(choices, heads.num_heads)
        tokens, coverage = drafts[draft]
        medusa = warmed_up(MedusaDecoder(model, heads, choices, compile_step=args.compile, draft_tokens=tokens))
        row = summarise(*measure_pairs(base, medusa, prompts, args.max_new_tokens, eos))
        row.update({"treeNodes": len(choices), "treeDepth": max(len(p) for p in choices),
                    "expectedAcceptedTokens": expected, "tree": choices,
                    "draftVocabulary": draft or model.cfg.vocab_size, "draftTrainingCoverage": round(coverage, 4)})
        rows.append(row)
    result = {
        "calibrationMethod": args.calibration_method if args.calibrate else None,
        "device": device_name(device), "dtype": args.dtype, "cudaGraphs": base.use_cuda_graphs, "compiled": args.compile,
        "tritonKernels": model.kernels,
        "numHeads": heads.num_heads, "maxNewTokens": args.max_new_tokens, "torch": torch.__version__, "runs": rows,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"device: {result['device']}, {args.dtype}, CUDA graphs: {result['cudaGraphs']}, "
          f"torch.compile: {args.compile}, Triton kernels: {model.kernels}, heads: {heads.num_heads}, "
          f"{len(prompts)} prompts x {args.max_new_tokens} new tokens, batch 1")
    header = ("tree", "draft vocab", "base tok/s", "medusa tok/s", "speedup", "tok/step", "expected", "base ms/step",
              "medusa ms/step", "identical")
    print(" | ".join(header))
    for row in rows:
        expected = f"{row['expectedAcceptedTokens']:.2f}" if row["expectedAcceptedTokens"] else "-"
        print(" | ".join((
            f"{row['treeNodes']} nodes/d{row['treeDepth']}", str(row["draftVocabulary"]),
            f"{row['baseTokensPerSecond']:.1f}",
            f"{row['medusaTokensPerSecond']:.1f}", f"{row['speedup']:.2f}x", f"{row['meanAcceptedTokens']:.2f}",
            expected, f"{row['baseStepMs']:.2f}", f"{row['medusaStepMs']:.2f}", f"{row['identical']}/{row['prompts']}",
        )))
    return 0 if all(row["identical"] == row["prompts"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
