"""Cost of one decoding step by tree size: torch operations against the Triton kernels.

Medusa pays off only if verifying a tree of candidates costs little more than decoding one
token. This measures milliseconds per step for plain decoding (0 nodes) and for trees of the
given sizes (the first nodes of the mc_sim_7b_63 preset), with random weights in the shape of a
real model (default SmolLM2-135M; ``--base`` reads another config), and checks that a tree's
rows are bit-identical to the same tokens decoded one at a time (what keeps Medusa output
identical to greedy decoding).

    python benchmarks/step_cost.py --dtype bfloat16 --dtype float32 --nodes 0 7 31 63

Trees whose rows (nodes plus the root) are a multiple of 16 run fastest with the kernels.
``--device cpu`` runs the torch operations only, for trying the script without a GPU.
``--end-at N`` ends each timed request at an end token after about N tokens, as real requests
end, so the figures include what the step after a request's last costs the next request.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from medusa_builder.runtime.decoding import MedusaDecoder, build_tree_buffers
from medusa_builder.runtime.heads import MedusaHeads
from medusa_builder.runtime.model import DTYPES, LlamaConfig, LlamaModel, kernels_unsupported, read_config
from medusa_builder.tree import PRESETS, normalise_tree

SMOLLM2_135M = {
    "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0, "max_position_embeddings": 8192, "tie_word_embeddings": True,
}


def random_weights(cfg: LlamaConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.02

    hidden, kv = cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim
    tensors = {"model.embed_tokens.weight": normal(cfg.vocab_size, hidden), "model.norm.weight": torch.ones(hidden)}
    shapes = {"self_attn.q_proj": (cfg.num_heads * cfg.head_dim, hidden), "self_attn.k_proj": (kv, hidden),
              "self_attn.v_proj": (kv, hidden), "self_attn.o_proj": (hidden, cfg.num_heads * cfg.head_dim),
              "mlp.gate_proj": (cfg.intermediate_size, hidden), "mlp.up_proj": (cfg.intermediate_size, hidden),
              "mlp.down_proj": (hidden, cfg.intermediate_size)}
    for i in range(cfg.num_layers):
        for name, shape in shapes.items():
            tensors[f"model.layers.{i}.{name}.weight"] = normal(*shape)
        tensors[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(hidden)
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = torch.ones(hidden)
    if not cfg.tie_word_embeddings:
        tensors["lm_head.weight"] = normal(cfg.vocab_size, hidden)
    return tensors


def tree_of(nodes: int, depth: int) -> list[list[int]]:
    return normalise_tree([p for p in PRESETS["mc_sim_7b_63"] if len(p) <= depth][:nodes], depth)


def draft_tokens(vocab_size: int, size: int) -> torch.Tensor | None:
    """A draft vocabulary of ``size`` ids spread over the vocabulary (its cost depends only on
    its size); None for the full vocabulary."""
    if not size:
        return None
    return torch.randperm(vocab_size, generator=torch.Generator().manual_seed(2))[:size].sort().values


def ms_per_step(decoder: MedusaDecoder, prompt: list[int], new_tokens: int, repeats: int,
                end_at: int = 0) -> tuple[float, float]:
    """Wall time of ``repeats`` requests back to back over their steps, and their mean length.
    With ``end_at``, each ends at the first token of its free-running output, from index
    ``end_at`` on, that it has not emitted before (random weights repeat a few tokens, so that
    can come much later, or never)."""
    free = decoder.generate(prompt, new_tokens).tokens  # also allocation, compilation, graph capture
    ends = [t for i, t in enumerate(free) if i >= end_at and t not in free[:i]][:1] if end_at else []
    if end_at and not ends:
        print(f"no new token from index {end_at} on: requests run to --new-tokens", file=sys.stderr)
    start = time.perf_counter()
    runs = [decoder.generate(prompt, new_tokens, ends) for _ in range(repeats)]
    if decoder.model.device.type == "cuda":
        torch.cuda.synchronize(decoder.model.device)
    ms = 1000 * (time.perf_counter() - start) / sum(r.steps for r in runs)
    return ms, sum(len(r.tokens) for r in runs) / repeats


def rows_identical(model: LlamaModel, prompt: list[int], nodes: int, depth: int) -> bool:
    """Decode a chain of tokens one at a time, then as a path of a tree; compare the rows bitwise."""
    device = model.device
    tb = build_tree_buffers(tree_of(nodes, depth), device)
    leaf = int(tb.paths[0][tb.path_valid[0]][-1])
    path = tb.ancestors[leaf, : int(tb.depths[leaf]) + 1].tolist()
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.cfg.vocab_size, (tb.size,), generator=gen).to(device)

    def prefilled():
        cache = model.new_cache(len(prompt) + 2 * tb.size)
        positions = torch.arange(len(prompt), device=device)
        committed = torch.tensor(len(prompt), device=device)
        first = torch.zeros(len(prompt), 1, dtype=torch.long, device=device)
        model.decode(torch.tensor(prompt, device=device), positions, committed, first, cache, positions)
        return cache

    cache = prefilled()
    alone = []
    for i, node in enumerate(path):
        n = torch.tensor(len(prompt) + i, device=device)
        itself = torch.zeros(1, 1, dtype=torch.long, device=device)
        alone.append(model.decode(tokens[node].view(1), n.view(1), n, itself, cache, n.view(1))[0])
    cache = prefilled()
    n = torch.tensor(len(prompt), device=device)
    tree = model.decode(tokens, n + tb.depths, n, tb.ancestors, cache, n + torch.arange(tb.size, device=device))
    return all(torch.equal(tree[node], row) for node, row in zip(path, alone))


def print_profile(model: LlamaModel, heads: MedusaHeads, nodes: int, depth: int, prompt: list[int],
                  draft: int, tile_rows: int | None) -> None:
    """GPU time per kernel over one 64-token generation, without CUDA graphs (so each launch is seen)."""
    from torch.profiler import ProfilerActivity, profile

    if nodes:
        decoder = MedusaDecoder(model, heads, tree_of(nodes, depth), head_tile_rows=tile_rows, use_cuda_graphs=False,
                                draft_tokens=draft_tokens(model.cfg.vocab_size, draft))
    else:
        decoder = MedusaDecoder(model, use_cuda_graphs=False)
    decoder.generate(prompt, 64)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        result = decoder.generate(prompt, 64)
    print(f"-- profile: {'kernels' if model.kernels else 'torch'}, {nodes} nodes, {result.steps} steps (+ prefill)")
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=70))
            return
        except (AttributeError, KeyError, ValueError):
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="read the model shape from this folder's config.json (default SmolLM2-135M)")
    parser.add_argument("--dtype", action="append", choices=sorted(DTYPES), help="repeatable (default bfloat16)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[0, 15, 31, 47, 63], help="tree sizes; 0 = plain")
    parser.add_argument("--heads", type=int, default=4, help="Medusa heads (tree depth)")
    parser.add_argument("--output-layer", action="store_true", help="heads with their own output layers")
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--end-at", type=int, default=0, metavar="N",
                        help="end each request at an end token after about N tokens (default: run to --new-tokens)")
    parser.add_argument("--draft-vocab", type=int, nargs="+", default=[0], metavar="N",
                        help="trees also with heads ranking only N tokens (0: the full vocabulary)")
    parser.add_argument("--head-tile-rows", type=int, nargs="+", default=[None], metavar="N",
                        help="kernels: output rows per proposal program, one run each (default the runtime's)")
    parser.add_argument("--profile", action="store_true",
                        help="also print GPU time per kernel: plain, and the largest tree with the last draft and tile")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; --device cpu runs the torch operations only")
    if args.end_at < 0:
        parser.error(f"--end-at counts tokens; it cannot be negative, got {args.end_at}")
    if args.profile and device.type != "cuda":
        parser.error("--profile times GPU kernels; it needs a CUDA device")

    cfg = LlamaConfig.from_hf(read_config(args.base) if args.base else SMOLLM2_135M)
    tensors = random_weights(cfg)
    heads = MedusaHeads(args.heads, 1, cfg.hidden_size, cfg.vocab_size, args.output_layer)
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0, 0.02)
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    rows = []
    for dtype in args.dtype or ["bfloat16"]:
        for implementation in ["torch"] + ([] if kernels_unsupported(cfg, device, dtype) else ["kernels"]):
            model = LlamaModel(cfg, tensors, DTYPES[dtype], device, kernels=implementation == "kernels")
            tiles = args.head_tile_rows if implementation == "kernels" else [None]
            runs = [(0, 0, None)] if 0 in args.nodes else []
            runs += [(nodes, draft, tile) for nodes in args.nodes if nodes for draft in args.draft_vocab
                     for tile in tiles]
            for nodes, draft, tile in runs:
                tokens = draft_tokens(cfg.vocab_size, draft)
                decoder = MedusaDecoder(model, heads, tree_of(nodes, args.heads), draft_tokens=tokens,
                                        head_tile_rows=tile) if nodes else MedusaDecoder(model)
                ms, length = ms_per_step(decoder, prompt, args.new_tokens, args.repeats, args.end_at)
                row = {"implementation": implementation, "dtype": dtype, "nodes": nodes,
                       "draftVocabulary": draft or cfg.vocab_size, "headTileRows": tile,
                       "msPerStep": ms, "tokensPerRequest": length}
                if nodes:
                    row["rowsIdentical"] = rows_identical(model, prompt, nodes, args.heads)
                rows.append(row)
                print(json.dumps(row), flush=True)
            if args.profile:
                for nodes in (0, max(args.nodes)):
                    print_profile(model, heads, nodes, args.heads, prompt, args.draft_vocab[-1],
                                  tiles[-1] if implementation == "kernels" else None)
            del model
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    result = {"device": name, "torch": torch.__version__, "heads": args.heads,
              "outputLayer": args.output_layer, "endAt": args.end_at, "rows": rows}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"device: {result['device']}, torch {torch.__version__}, batch 1, {args.prompt_tokens}-token prompt, "
          f"requests end {f'at an end token after about {args.end_at} tokens' if args.end_at else 'at the token limit'}")
    print("implementation | dtype | tree nodes | draft vocab | head tile rows | tokens/request | ms/step | vs plain "
          "| tree rows identical")
    for row in rows:
        plain = next(r["msPerStep"] for r in rows if r["implementation"] == row["implementation"]
                     and r["dtype"] == row["dtype"] and r["nodes"] == 0) if 0 in args.nodes else row["msPerStep"]
        print(f"{row['implementation']} | {row['dtype']} | {row['nodes']} | {row['draftVocabulary']} | "
              f"{row['headTileRows'] or '-'} | {row['tokensPerRequest']:.0f} | {row['msPerStep']:.3f} | "
              f"{row['msPerStep'] / plain:.2f}x | {row.get('rowsIdentical', '-')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
