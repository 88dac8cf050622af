"""Tile choices for the decoding kernels' projections, measured on this card.

For every projection of the named model shapes (``model_shapes.SHAPES``) this times each
candidate tiling of ``kernels._linear_kernel`` at the given row counts (1: a one-token step; 16,
32, 64: trees of 15, 31, 63 nodes) and picks the one with the least total time. Weights rotate
among at least two copies that together exceed the L2 cache three times, so every launch reads
its weight from memory as a decoding step does (never the part of it the cache kept from the
launch before); launches are timed as CUDA graph replays. A winner with 64-row tiles (a tree
takes one) then gets the row tiles per program that project a prompt of ``--prompt-rows``
fastest, which changes nothing for a tree nor any row's bits. The winners are printed as
``kernels.LINEAR_TILE_TABLE`` entries and written with every measurement to ``--json-out``
(which ``step_cost.py --linear-tiles`` reads).

    python benchmarks/linear_tiles.py --shape llama3-8b qwen2-7b llama3.2-1b --json-out tiles.json

Kernels compile first in parallel worker processes (Triton's disk cache then serves them here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import torch

from medusa_runtime.engine import kernels
from medusa_runtime.engine.kernels import TILE_KINDS, LinearTiles
from medusa_runtime.engine.model import LlamaConfig
from medusa_runtime.engine.weights import PackedWeight
from model_shapes import SHAPES, best_gpu_seconds, projections

# Column block, K block, warps, pipelining stages, row tiles, rows a tile, K splits. Narrow
# columns give many programs (a one-token step needs them to keep enough loads in flight); wide
# ones re-read the activations fewer times. 16-row tiles use the older matrix instructions four
# to a 64-row tree; 64-row tiles let Hopper's warpgroup instructions take the tree in one. K
# splits give wide tiles their programs back.
CANDIDATES = [LinearTiles(*c) for c in [
    (32, 256, 4, 3, 4, 16), (64, 128, 4, 3, 4, 16), (128, 64, 4, 4, 4, 16), (128, 128, 8, 3, 4, 16),
    (32, 128, 4, 3, 1, 64), (64, 64, 4, 4, 1, 64), (64, 128, 4, 3, 1, 64), (128, 64, 4, 3, 1, 64),
    (128, 64, 8, 3, 1, 64), (256, 64, 8, 3, 1, 64), (64, 256, 4, 3, 1, 64),
    (32, 256, 2, 3, 4, 16, 2), (64, 128, 4, 3, 4, 16, 2),
    (32, 128, 4, 3, 1, 64, 2), (64, 64, 4, 4, 1, 64, 2), (64, 128, 4, 3, 1, 64, 2), (128, 64, 4, 3, 1, 64, 2),
    (64, 64, 4, 4, 1, 64, 4), (128, 64, 4, 3, 1, 64, 4), (256, 64, 8, 3, 1, 64, 2),
    # More programs than SMs several times over, so a one-token step's last wave is short.
    (32, 64, 4, 4, 1, 64), (64, 64, 4, 3, 1, 64, 3), (32, 128, 4, 3, 1, 64, 4), (128, 64, 8, 3, 1, 64, 4),
    (128, 64, 8, 4, 1, 64), (64, 128, 4, 4, 1, 64, 2), (128, 64, 4, 4, 1, 64, 4),
]] + [LinearTiles(*c, programs_per_sm=p) for *c, p in [
    # Runs of K blocks, one a program, an equal share of the weight per SM: for column tiles
    # that leave SMs idle (as 112 tiles on 132 SMs do) or do not divide among them.
    (128, 64, 8, 3, 1, 64, 1, 0, 1), (128, 64, 8, 4, 1, 64, 1, 0, 1), (128, 64, 4, 4, 1, 64, 1, 0, 1),
    (64, 128, 4, 3, 1, 64, 1, 0, 1), (64, 128, 4, 4, 1, 64, 1, 0, 1), (64, 64, 4, 4, 1, 64, 1, 0, 2),
    (128, 64, 4, 3, 1, 64, 1, 0, 2),
]]


# Weight layouts a candidate is timed in: row by row, or packed in its blocks (weights.py).
LAYOUTS = {"row-major": False, "packed": True}


def key(projection: dict) -> tuple[str, int, int]:
    return projection["kind"], projection["n"], projection["k"]


def candidates(projection: dict, source: str, layouts: list[str]) -> list[LinearTiles]:
    """The tilings to time, each in every layout: the sweep's candidates, or (``table``) only
    the runtime's present choice; the small-model rule, row-major, always (for comparison)."""
    n, k, kind = projection["n"], projection["k"], projection["kind"]
    base = CANDIDATES if source == "sweep" else [kernels.linear_tiles(n, k, kind)]
    out = [replace(t, packed=LAYOUTS[layout], prefetch=0 if LAYOUTS[layout] else t.prefetch)
           for t in base for layout in layouts]
    out.append(kernels._rule_tiles(n, k, kind))
    return list(dict.fromkeys(out))


def variant(projection: dict, tiles: LinearTiles, rows: int) -> tuple:
    """What makes a compiled kernel differ: the projection's flags, the tiling, the row tiles a
    program takes, and a row count of one (which Triton specialises on)."""
    return projection["kind"], projection["bias"], tiles, min(tiles.row_tiles, -(-rows // tiles.block_m)), rows == 1


def input_dtype(projection: dict) -> torch.dtype:
    """The runtime feeds projections without a norm (o, down) in the weight's dtype."""
    return torch.bfloat16 if projection["kind"] == "plain" else torch.float32


def weight_copies(weight_bytes: int, l2_bytes: int) -> int:
    """Copies of a weight to rotate among: together at least three times the L2 cache, and never
    one alone, whose launches could find part of their weight still in the cache from the launch
    before (a decoding step reads each weight once)."""
    return max(2, math.ceil(3 * l2_bytes / weight_bytes))


def choose(measured: dict[LinearTiles, dict[int, float | None]]) -> LinearTiles:
    """The tiling with the least total time over the row counts; one that failed at any row count
    (out of registers or shared memory) is out."""
    complete = {t: sum(us.values()) for t, us in measured.items() if us and None not in us.values()}
    if not complete:
        raise RuntimeError("no candidate tiling ran at every row count")
    return min(complete, key=complete.get)


def _buffers(projection: dict, tiles: LinearTiles, rows: int, device: torch.device, copies: int,
             seed: int = 0) -> dict:
    gen = torch.Generator(device=device).manual_seed(seed)
    n, k = projection["n"], projection["k"]
    width = 2 * n if projection["kind"] == "gated" else n
    argmax = projection["kind"] == "argmax"
    tiles_out = n  # enough columns for per-tile argmax results at any column block
    weights = [torch.randn(width, k, generator=gen, device=device, dtype=torch.bfloat16) * 0.02
               for _ in range(copies)]
    if tiles.packed:
        weights = [PackedWeight.pack(w, tiles.block_n, tiles.block_k, projection["kind"] == "gated") for w in weights]
    return {
        "weights": weights,
        "x": torch.randn(rows, k, generator=gen, device=device).to(input_dtype(projection)),
        "norm": torch.rand(k, generator=gen, device=device, dtype=torch.bfloat16) + 0.5
        if projection["kind"] in ("norm", "gated", "argmax") else None,
        "bias": torch.randn(n, generator=gen, device=device, dtype=torch.bfloat16) if projection["bias"] else None,
        "residual": torch.randn(rows, n, generator=gen, device=device) if projection["kind"] == "plain" else None,
        "out": torch.empty(rows, tiles_out if argmax else n, device=device),
        "index": torch.empty(rows, tiles_out, dtype=torch.int32, device=device),
    }


def _launch(projection: dict, b: dict, copy: int) -> None:
    kernels._launch_linear(b["x"], b["weights"][copy], b["out"], b["index"], projection["n"], bias=b["bias"],
                           norm=b["norm"], eps=1e-5, residual=b["residual"], gated=projection["kind"] == "gated",
                           argmax=projection["kind"] == "argmax")


def _compile(job: tuple[dict, LinearTiles, int]) -> str | None:
    """Worker: compile one (projection kind, tiling, row count) on small tensors of the same
    specialisation; None, or why it cannot run."""
    projection, tiles, rows = job
    small = {**projection, "n": 256, "k": 2 * tiles.block_k * tiles.split_k}  # every K split gets work
    if tiles.programs_per_sm:  # runs of several K blocks, some cutting column tiles
        small["k"] = tiles.block_k * 3 * kernels.sm_count(torch.device("cuda")) * tiles.programs_per_sm
    try:
        with kernels.tile_table({key(small): tiles}):
            _launch(small, _buffers(small, tiles, rows, torch.device("cuda"), 1), 0)
        torch.cuda.synchronize()
        return None
    except Exception as exc:  # out of resources and the like: that candidate is out
        return f"{type(exc).__name__}: {str(exc)[:200]}"


def precompile(jobs: list[tuple[dict, LinearTiles, int]], workers: int) -> dict:
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return dict(zip([variant(*job) for job in jobs], pool.map(_compile, jobs)))


def time_us(projection: dict, tiles: LinearTiles, rows: int, device: torch.device) -> float:
    """Microseconds per launch, the best of five replays of a graph of launches over rotating
    weight copies."""
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    width = 2 * projection["n"] if projection["kind"] == "gated" else projection["n"]
    copies = weight_copies(width * projection["k"] * 2, l2)
    launches = max(8, 2 * copies)
    b = _buffers(projection, tiles, rows, device, copies)
    with kernels.tile_table({key(projection): tiles}):
        _launch(projection, b, 0)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            _launch(projection, b, 0)
        torch.cuda.current_stream(device).wait_stream(stream)
        with torch.cuda.graph(graph):
            for i in range(launches):
                _launch(projection, b, i % copies)
    us = best_gpu_seconds(graph.replay, runs=5) * 1e6 / launches
    del graph, b
    return us


TREE_ROWS = 64  # the most rows a step projects: a 63-node tree and its root


def prompt_options(tiles: LinearTiles) -> list[int]:
    """Row tiles a program may take that give a tree's programs the same rows as ``tiles`` do."""
    tile_rows = -(-TREE_ROWS // tiles.block_m)
    return [r for r in range(1, kernels.MAX_ROW_TILES + 1) if min(r, tile_rows) == min(tiles.row_tiles, tile_rows)]


def prompt_row_tiles(projection: dict, best: LinearTiles, rows: int,
                     device: torch.device) -> tuple[LinearTiles, dict[int, float]]:
    """Among the row tiles that change nothing for a tree (64-row tiles: a tree has one), the
    one that projects a prompt of ``rows`` fastest: a program then reads each weight block once
    for several of the prompt's row tiles. Row tiles never change a row's bits."""
    us = {}
    for r in prompt_options(best):
        try:
            us[r] = time_us(projection, replace(best, row_tiles=r), rows, device)
        except Exception as exc:  # noqa: BLE001 - out of registers or shared memory: not an option
            print(f"  {replace(best, row_tiles=r)} at {rows} rows: {type(exc).__name__}: {str(exc)[:120]}",
                  file=sys.stderr)
    if not us:
        return best, {}
    return replace(best, row_tiles=min(us, key=us.get)), us


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs="+", default=["llama3-8b"], choices=sorted(SHAPES))
    parser.add_argument("--kinds", nargs="+", default=list(TILE_KINDS), choices=TILE_KINDS,
                        help="only these projections (default: all)")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 32, 64],
                        help="row counts to time (a one-token step is 1; a tree of N nodes N + 1)")
    parser.add_argument("--prompt-rows", type=int, default=200,
                        help="also pick the row tiles a program of a prompt this long takes (0: leave them)")
    parser.add_argument("--candidates", choices=["sweep", "table"], default="sweep",
                        help="the sweep's tilings, or only those the runtime's table holds now")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS),
                        help="weight layouts to time each tiling in")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="compiling processes")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    if any(r < 1 or r > TREE_ROWS for r in args.rows):
        parser.error(f"row counts must be 1 to {TREE_ROWS} (a {TREE_ROWS - 1}-node tree)")
    if args.prompt_rows < 0:
        parser.error(f"--prompt-rows counts a prompt's tokens (0: leave the row tiles); got {args.prompt_rows}")
    if not torch.cuda.is_available():
        parser.error("this times GPU kernels; it needs a CUDA device")
    device = torch.device("cuda")
    wanted: dict[tuple, dict] = {}
    for shape in args.shape:
        for p in projections(LlamaConfig.from_hf(SHAPES[shape])):
            if p["kind"] not in args.kinds:
                continue
            wanted.setdefault(key(p), {**p, "shapes": []})["shapes"].append(f"{shape}:{p['name']}")
    rule = {k: kernels._rule_tiles(k[1], k[2], k[0]) for k in wanted}
    started = time.perf_counter()
    jobs, seen = [], set()
    for p in wanted.values():
        for tiles in candidates(p, args.candidates, args.layouts):
            for rows in args.rows:
                job_key = variant(p, tiles, rows)
                if job_key not in seen:
                    seen.add(job_key)
                    jobs.append((p, tiles, rows))
            for r in prompt_options(tiles) if args.prompt_rows else []:
                jobs.append((p, replace(tiles, row_tiles=r), args.prompt_rows))
    failures = precompile(jobs, args.workers)
    print(f"compiled {len(jobs)} kernels in {time.perf_counter() - started:.0f} s "
          f"({sum(v is not None for v in failures.values())} failed)", flush=True)
    results = []
    for p in wanted.values():
        measured: dict[LinearTiles, dict[int, float | None]] = {}
        for tiles in candidates(p, args.candidates, args.layouts):
            us: dict[int, float | None] = {}
            for rows in args.rows:
                failed = failures.get(variant(p, tiles, rows))
                try:
                    us[rows] = None if failed else time_us(p, tiles, rows, device)
                except Exception as exc:  # noqa: BLE001 - a candidate that cannot run is skipped
                    print(f"  {tiles}: {type(exc).__name__}: {str(exc)[:120]}", file=sys.stderr)
                    us[rows] = None
            measured[tiles] = us
        tree_best = choose(measured)
        best, prompt_us = tree_best, {}
        if args.prompt_rows:
            best, prompt_us = prompt_row_tiles(p, tree_best, args.prompt_rows, device)
        weight_bytes = (2 if p["kind"] == "gated" else 1) * p["n"] * p["k"] * 2
        result = {"kind": p["kind"], "n": p["n"], "k": p["k"], "shapes": p["shapes"], "weightBytes": weight_bytes,
                  "best": best.to_json(), "bestUs": measured[tree_best],
                  "promptUs": prompt_us, "ruleUs": measured[rule[key(p)]],
                  "measured": [{**t.to_json(), "us": us} for t, us in measured.items()]}
        results.append(result)
        best_us = result["bestUs"]
        row_text = " ".join(f"{r}: {best_us[r]:.1f}" for r in args.rows)
        if prompt_us:
            row_text += f" {args.prompt_rows}: {prompt_us[best.row_tiles]:.1f}"
        rule_text = " ".join(f"{r}: {u:.1f}" if u else f"{r}: -" for r, u in measured[rule[key(p)]].items())
        print(f"{'/'.join(p['shapes'])} {p['kind']} {p['n']}x{p['k']} ({weight_bytes / 1e6:.0f} MB): best {best} "
              f"us {row_text} (GB/s at 1 row: {weight_bytes / best_us[args.rows[0]] / 1e3:.0f}); "
              f"rule us {rule_text}", flush=True)
    name = torch.cuda.get_device_name(device)
    print(f"\n# {name}: benchmarks/linear_tiles.py --shape {' '.join(args.shape)} --rows "
          f"{' '.join(map(str, args.rows))}")
    for r in results:
        b = r["best"]
        runs = f", programs_per_sm={b['programsPerSm']}" if b["programsPerSm"] else ""
        runs += ", packed=True" if b["packed"] else ""
        print(f"    ({r['kind']!r}, {r['n']}, {r['k']}): LinearTiles({b['blockN']}, {b['blockK']}, {b['warps']}, "
              f"{b['stages']}, {b['rowTiles']}, {b['blockM']}, {b['splitK']}{runs}),  # {', '.join(r['shapes'])}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": args.rows,
                                                   "shapes": args.shape, "candidates": args.candidates,
                                                   "layouts": args.layouts, "projections": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
