"""Cost of one decoding step by tree size: torch operations against the Triton kernels.

Medusa pays off only if verifying a tree of candidates costs little more than decoding one
token. This measures milliseconds per step for plain decoding (0 nodes) and for trees of the
given sizes (the first nodes of the mc_sim_7b_63 preset), with random weights in the shape of a
real model (``--shape`` names one, default SmolLM2-135M; ``--base`` reads a model folder's
config), and checks that a tree's rows are bit-identical to the same tokens decoded one at a
time (what keeps Medusa output identical to greedy decoding).

    python benchmarks/step_cost.py --dtype bfloat16 --dtype float32 --nodes 0 7 31 63
    python benchmarks/step_cost.py --shape llama3-8b --heads 5 --output-layer --nodes 0 15 31 63 \
        --new-tokens 64 --draft-vocab 0 16384 --linear-tiles table rule

On a GPU it also prints the weight-read floor of a plain step (the bytes of weights it reads
over the card's measured read bandwidth) and, for the kernels' tree steps, what the heads'
proposals alone cost (their residual blocks and top-k, timed apart in a CUDA graph), so a tree
step's verification can be compared with a plain step without them.

Trees whose rows (nodes plus the root) are a multiple of 16 run fastest with the kernels.
``--device cpu`` runs the torch operations only, for trying the script without a GPU.
``--end-at N`` ends each timed request at an end token after about N tokens, as real requests
end, so the figures include what the step after a request's last costs the next request.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from medusa_runtime.engine.decoding import MedusaDecoder, build_tree_buffers
from medusa_runtime.engine.heads import MedusaHeads
from medusa_runtime.engine.model import DTYPES, LlamaConfig, LlamaModel, kernels_unsupported, read_config
from medusa_common.tree import PRESETS, normalise_tree
from model_shapes import SHAPES, best_gpu_seconds, plain_step_bytes, random_weights, read_bandwidth


def linear_tiles(override: dict | None):
    """The kernels' tile choices for a run: the runtime's own (None) or ``override``."""
    if override is None:
        return contextlib.nullcontext()
    from medusa_runtime.engine import kernels

    return kernels.tile_table(override)


@contextlib.contextmanager
def attention_shape(key_chunk: int | None, query_rows: int | None):
    """Within it, the kernels' attention splits keys into chunks of ``key_chunk`` positions and
    takes ``query_rows`` query-head rows a tile (None: the runtime's own), for comparing them.
    A decoder made and run within it keeps them in its CUDA graphs."""
    from medusa_runtime.engine import kernels

    previous = kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS
    kernels.KEY_CHUNK = key_chunk or previous[0]
    kernels.QUERY_TILE_ROWS = query_rows or previous[1]
    try:
        yield
    finally:
        kernels.KEY_CHUNK, kernels.QUERY_TILE_ROWS = previous


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


def proposal_ms(decoder: MedusaDecoder, launches: int = 20) -> float:
    """GPU milliseconds of one step's proposals alone (the heads' residual blocks on the last
    accepted row, then each head's top-k and the tree's tokens), the best of five replays of a
    CUDA graph of ``launches`` of them on the decoder's last session."""
    s = next(iter(decoder._sessions.values()))

    def work() -> None:
        for _ in range(launches):
            decoder._remember(s, s.x, s.last)
            decoder._candidates(s)

    return best_gpu_seconds(decoder._graph(work).replay, runs=5) * 1e3 / launches


def tile_sources(names: list[str]) -> list[tuple[str, dict | None]]:
    """``table`` (the runtime's own choices), ``rule`` (the small-model rule everywhere, as
    before the table) or a ``linear_tiles.py --json-out`` file: (label, override for
    ``kernels.tile_table``; None: no override)."""
    from medusa_runtime.engine.kernels import LinearTiles

    sources = []
    for name in names:
        if name == "table":
            sources.append((name, None))
        elif name == "rule":
            sources.append((name, {}))
        else:
            measured = json.loads(Path(name).read_text())
            sources.append((Path(name).name, {(p["kind"], p["n"], p["k"]): LinearTiles.from_json(p["best"])
                                              for p in measured["projections"]}))
    return sources


def summary(rows: list[dict], floor_ms: float | None) -> list[dict]:
    """Per implementation, dtype and kernel variant: each tree size's step against the plain step,
    without its proposals too, and against the torch operations at the same size."""
    out = []
    for row in rows:
        variant = ("implementation", "dtype", "linearTiles", "attention")
        same = [r for r in rows if all(r.get(key) == row.get(key) for key in variant)]
        plain = next((r["msPerStep"] for r in same if r["nodes"] == 0), None)
        torch_row = next((r["msPerStep"] for r in rows if r["implementation"] == "torch" and r["dtype"] == row["dtype"]
                          and r["nodes"] == row["nodes"] and r["draftVocabulary"] == row["draftVocabulary"]), None)
        item = {**row, "vsPlain": row["msPerStep"] / plain if plain else None,
                "vsTorch": row["msPerStep"] / torch_row if torch_row else None}
        if plain and row.get("proposalMs") is not None:
            item["vsPlainWithoutProposals"] = (row["msPerStep"] - row["proposalMs"]) / plain
            item["proposalShare"] = row["proposalMs"] / row["msPerStep"]
        if floor_ms and row["nodes"] == 0:
            item["vsFloor"] = row["msPerStep"] / floor_ms
        out.append(item)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--shape", choices=sorted(SHAPES), help="a model shape by name (default smollm2-135m)")
    shape.add_argument("--base", help="read the model shape from this folder's config.json")
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
    parser.add_argument("--proposal-drafts", type=int, nargs="*", default=[], metavar="N",
                        help="kernels: also time the proposals alone for the largest tree at these draft sizes")
    parser.add_argument("--head-tile-rows", type=int, nargs="+", default=[None], metavar="N",
                        help="kernels: output rows per proposal program, one run each (default the runtime's)")
    parser.add_argument("--linear-tiles", nargs="+", default=["table"], metavar="SOURCE",
                        help="kernels: projection tiles from the runtime's table, the small-model rule, or a "
                             "linear_tiles.py --json-out file; one set of runs each")
    parser.add_argument("--attention", nargs="+", default=["runtime"], metavar="CHUNK:ROWS",
                        help="kernels: attention key chunks of CHUNK positions and query tiles of ROWS rows, "
                             "one set of runs each (default: the runtime's own)")
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
    for name in args.linear_tiles:
        if name not in ("table", "rule") and not Path(name).is_file():
            parser.error(f"--linear-tiles takes table, rule or a linear_tiles.py --json-out file; {name} is none")

    attention = []
    for spec in args.attention:
        chunk, _, query_rows = spec.partition(":")
        if spec == "runtime":
            attention.append((None, None))
        elif chunk.isdigit() and query_rows.isdigit() and all(
                v >= 16 and v & (v - 1) == 0 for v in (int(chunk), int(query_rows))):
            attention.append((int(chunk), int(query_rows)))
        else:
            parser.error(f"--attention takes runtime or CHUNK:ROWS, powers of two of at least 16; got {spec}")

    shape_name = args.shape or ("smollm2-135m" if not args.base else None)
    cfg = LlamaConfig.from_hf(read_config(args.base) if args.base else SHAPES[shape_name])
    bandwidth = read_bandwidth(device) if device.type == "cuda" else None
    if bandwidth:
        print(f"measured bandwidth: read {bandwidth['read'] / 1e9:.0f} GB/s, copy (read + write) "
              f"{bandwidth['copy'] / 1e9:.0f} GB/s", flush=True)
    with torch.device(device):
        heads = MedusaHeads(args.heads, 1, cfg.hidden_size, cfg.vocab_size, args.output_layer)
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0, 0.02)
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    rows, floors, proposals = [], {}, []
    decoder = None

    def free_decoder() -> None:
        """A decoder refers to itself (its step parts are its bound methods), so its CUDA graphs,
        cache and int8 output layers are freed only by the cycle collector; for a 7-8B model each
        holds gigabytes, and left to pile up they made a later graph capture fail."""
        nonlocal decoder
        decoder = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    for dtype in args.dtype or ["bfloat16"]:
        tensors = random_weights(cfg, device, DTYPES[dtype])
        heads.to(dtype=DTYPES[dtype])
        for implementation in ["torch"] + ([] if kernels_unsupported(cfg, device, dtype) else ["kernels"]):
            tiles = args.head_tile_rows if implementation == "kernels" else [None]
            sources = tile_sources(args.linear_tiles) if implementation == "kernels" else [(None, None)]
            variants = attention if implementation == "kernels" else [(None, None)]
            for source, override in sources:
                # Built under the source's tiles: they decide which weights it keeps packed.
                model = None
                free_decoder()
                with linear_tiles(override):
                    model = LlamaModel(cfg, tensors, DTYPES[dtype], device, kernels=implementation == "kernels")
                if bandwidth and dtype not in floors:
                    floors[dtype] = plain_step_bytes(model) / bandwidth["read"] * 1000
                runs = [(0, 0, None)] if 0 in args.nodes else []
                runs += [(nodes, draft, tile) for nodes in args.nodes if nodes for draft in args.draft_vocab
                         for tile in tiles]
                for (key_chunk, query_rows), (nodes, draft, tile) in itertools.product(variants, runs):
                    with linear_tiles(override), attention_shape(key_chunk, query_rows):
                        tokens = draft_tokens(cfg.vocab_size, draft)
                        decoder = MedusaDecoder(model, heads, tree_of(nodes, args.heads), draft_tokens=tokens,
                                                head_tile_rows=tile) if nodes else MedusaDecoder(model)
                        ms, length = ms_per_step(decoder, prompt, args.new_tokens, args.repeats, args.end_at)
                        row = {"implementation": implementation, "dtype": dtype, "nodes": nodes,
                               "draftVocabulary": draft or cfg.vocab_size, "headTileRows": tile,
                               "msPerStep": ms, "tokensPerRequest": length}
                        if source:
                            row["linearTiles"] = source
                        if key_chunk:
                            row["attention"] = f"{key_chunk}:{query_rows}"
                        if nodes:
                            row["rowsIdentical"] = rows_identical(model, prompt, nodes, args.heads)
                            if implementation == "kernels" and decoder.use_cuda_graphs:
                                row["proposalMs"] = proposal_ms(decoder)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    free_decoder()
            if implementation == "kernels" and device.type == "cuda" and args.proposal_drafts:
                largest = max(args.nodes)
                for draft in args.proposal_drafts:
                    decoder = MedusaDecoder(model, heads, tree_of(largest, args.heads),
                                            draft_tokens=draft_tokens(cfg.vocab_size, draft))
                    decoder.prepare(args.prompt_tokens, 16)
                    item = {"dtype": dtype, "nodes": largest, "draftVocabulary": draft or cfg.vocab_size,
                            "proposalMs": proposal_ms(decoder),
                            "outputLayerBytes": decoder._outputs.weight.numel() + 4 * decoder._outputs.scale.numel()}
                    proposals.append(item)
                    print(json.dumps(item), flush=True)
                    free_decoder()
            if args.profile:
                for nodes in (0, max(args.nodes)):
                    print_profile(model, heads, nodes, args.heads, prompt, args.draft_vocab[-1],
                                  tiles[-1] if implementation == "kernels" else None)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del tensors
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    floor_ms = floors.get("bfloat16") or next(iter(floors.values()), None)
    table = summary(rows, floor_ms)
    result = {"device": name, "torch": torch.__version__, "shape": shape_name or args.base, "heads": args.heads,
              "outputLayer": args.output_layer, "endAt": args.end_at, "promptTokens": args.prompt_tokens,
              "newTokens": args.new_tokens, "rows": table, "proposals": proposals}
    if bandwidth:
        result["bandwidth"] = {"readBytesPerSecond": bandwidth["read"], "copyBytesPerSecond": bandwidth["copy"]}
        result["floorMs"] = floors
        result["plainStepBytes"] = {d: f * bandwidth["read"] / 1000 for d, f in floors.items()}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"device: {result['device']}, torch {torch.__version__}, shape {result['shape']}, batch 1, "
          f"{args.prompt_tokens}-token prompt, requests end "
          f"{f'at an end token after about {args.end_at} tokens' if args.end_at else 'at the token limit'}")
    for dtype, floor in floors.items():
        print(f"weight-read floor ({dtype}): {result['plainStepBytes'][dtype] / 1e9:.2f} GB a plain step / "
              f"{bandwidth['read'] / 1e9:.0f} GB/s read = {floor:.3f} ms")
    print("implementation | tiles | attention | dtype | tree nodes | draft vocab | head tile rows | tokens/request | ms/step | "
          "vs plain | without proposals | proposals ms | vs torch | vs floor | tree rows identical")

    def fmt(value, spec: str, unit: str = "") -> str:
        return "-" if value is None else format(value, spec) + unit

    for row in table:
        print(f"{row['implementation']} | {row.get('linearTiles') or '-'} | {row.get('attention') or '-'} | "
              f"{row['dtype']} | {row['nodes']} | "
              f"{row['draftVocabulary']} | {row['headTileRows'] or '-'} | {row['tokensPerRequest']:.0f} | "
              f"{row['msPerStep']:.3f} | {fmt(row['vsPlain'], '.3f', 'x')} | "
              f"{fmt(row.get('vsPlainWithoutProposals'), '.3f', 'x')} | {fmt(row.get('proposalMs'), '.3f')} | "
              f"{fmt(row['vsTorch'], '.3f', 'x')} | {fmt(row.get('vsFloor'), '.2f', 'x')} | "
              f"{row.get('rowsIdentical', '-')}")
    for item in proposals:
        print(f"proposals alone, {item['nodes']} nodes, draft {item['draftVocabulary']}: {item['proposalMs']:.3f} ms "
              f"({item['outputLayerBytes'] / 1e9:.2f} GB of int8 output layers and scales)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
