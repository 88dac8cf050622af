"""Where a decoding step's time goes on the GPU: each kernel of a graphed step, by role.

``step_cost.py`` gives milliseconds per step as a request sees them (its prompt's prefill and
the host included). This takes a decoder's captured step graphs apart: it times a step's graphs
alone (replayed back to back, no host work between them), the prefill graph alone, and, through
the profiler, every kernel of a few replayed steps, named by its role in the layer (the qkv, o,
gate/up and down projections, RoPE, attention, the output layer, ...) with the idle time between
kernels; and, for comparison, the request figure ``step_cost.py`` prints. Graph replays are
profiled as they run, so the kernels' times include no launch overhead; where the profiler
records no kernel of a replay, the run says so instead of a breakdown.

    python benchmarks/step_breakdown.py --shape llama3-8b --nodes 0 31 63 --json-out breakdown.json
    python benchmarks/step_breakdown.py --shape llama3-8b --dependent-launches off on --prefetch 0 2

Random weights in the shape's sizes, as in ``step_cost.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from medusa_runtime.engine import kernels
from medusa_runtime.engine.decoding import MedusaDecoder
from medusa_runtime.engine.heads import MedusaHeads
from medusa_runtime.engine.model import LlamaConfig, LlamaModel
from model_shapes import SHAPES, plain_step_bytes, random_weights, read_bandwidth
from step_cost import ms_per_step, tree_of

# A decoder layer's projections in launch order (model.decode_layers); the output layer follows
# the last layer's.
LAYER_PROJECTIONS = ("qkv", "o", "gate_up", "down")


def _graph_ms(graphs: list[torch.cuda.CUDAGraph], repeats: int) -> float:
    """Milliseconds per replay of ``graphs`` in order, replayed ``repeats`` times back to back."""
    for graph in graphs:
        graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        for graph in graphs:
            graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def _role(name: str) -> str:
    for part, role in (("_linear_kernel", "linear"), ("_rope_store", "rope"), ("_attention_chunk", "attention"),
                       ("_attention_combine", "attention combine"), ("_head_block", "heads' blocks"),
                       ("_topk", "heads' top-k"), ("_accept", "accept")):
        if part in name:
            return role
    return "other: " + name[:60]


def _kernels(trace: dict) -> list[dict]:
    events = [e for e in trace.get("traceEvents", []) if e.get("cat") == "kernel" and "dur" in e]
    return sorted(events, key=lambda e: e["ts"])


def summarise(events: list[dict], steps: int, layers: int) -> dict:
    """Per-role GPU microseconds of one step (the mean over ``steps``) from the profiler's kernel
    events of ``steps`` replayed steps (each with ``name``, ``ts`` and ``dur`` in microseconds, in
    launch order), and the idle time between kernels. Projection kernels are told apart by their
    place in a step: four a layer in ``LAYER_PROJECTIONS`` order, then the output layer."""
    if not events:
        return {"error": "the profiler recorded no kernels of the graph replays"}
    linears_per_step = sum("_linear_kernel" in e["name"] for e in events) // steps
    roles: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    linear_index = 0
    for e in events:
        role = _role(e["name"])
        if role == "linear":
            i = linear_index % linears_per_step
            role = LAYER_PROJECTIONS[i % 4] if i < 4 * layers else "lm_head"
            linear_index += 1
        roles[role] += e["dur"]
        counts[role] += 1
    span = events[-1]["ts"] + events[-1]["dur"] - events[0]["ts"]
    busy = sum(e["dur"] for e in events)
    return {
        "kernelsPerStep": len(events) / steps,
        "usPerStep": {role: us / steps for role, us in sorted(roles.items(), key=lambda kv: -kv[1])},
        "launchesPerStep": {role: n / steps for role, n in counts.items()},
        "busyUsPerStep": busy / steps,
        "spanUsPerStep": span / steps,
        "idleUsPerStep": (span - busy) / steps,
    }


def breakdown(decoder: MedusaDecoder, steps: int) -> dict:
    """``summarise`` of a profile of ``steps`` replays of the decoder's step graphs."""
    from torch.profiler import ProfilerActivity, profile

    s = next(iter(decoder._sessions.values()))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            for graph in s.graphs:
                graph.replay()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = _kernels(json.loads(path.read_text()))
    return summarise(events, steps, decoder.model.cfg.num_layers)


def prefetching_table(blocks: int) -> dict:
    """The runtime's tile table with every row-major entry prefetching ``blocks`` K blocks (packed
    entries keep none: a packed weight has no row-major lines to ask for)."""
    return {key: tiles if tiles.packed else dataclasses.replace(tiles, prefetch=blocks)
            for key, tiles in kernels.LINEAR_TILE_TABLE.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    parser.add_argument("--nodes", type=int, nargs="+", default=[0, 31, 63], help="tree sizes; 0 = plain")
    parser.add_argument("--heads", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--dependent-launches", nargs="+", choices=["on", "off"], default=["on"],
                        help="programmatic dependent launches (Hopper and newer); one set of runs each")
    parser.add_argument("--prefetch", type=int, nargs="+", default=[None], metavar="BLOCKS",
                        help="weight K blocks every row-major table tiling prefetches (default: the table's own); "
                             "one set of runs each")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("this profiles GPU kernels; it needs a CUDA device")
    device = torch.device("cuda")
    cfg = LlamaConfig.from_hf(SHAPES[args.shape])
    bandwidth = read_bandwidth(device)
    tensors = random_weights(cfg, device, torch.bfloat16)
    model = LlamaModel(cfg, tensors, torch.bfloat16, device, kernels=True)
    floor_ms = plain_step_bytes(model) / bandwidth["read"] * 1000
    with torch.device(device):
        heads = MedusaHeads(args.heads, 1, cfg.hidden_size, cfg.vocab_size, True)
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0, 0.02)
    heads.to(dtype=torch.bfloat16)
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt_tokens,),
                           generator=torch.Generator().manual_seed(0)).tolist()
    runs = []
    for launches, prefetch, nodes in itertools.product(args.dependent_launches, args.prefetch, args.nodes):
        kernels.DEPENDENT_LAUNCHES = launches == "on"
        table = None if prefetch is None else prefetching_table(prefetch)
        with kernels.tile_table(table) if table is not None else contextlib.nullcontext():
            decoder = (MedusaDecoder(model, heads, tree_of(nodes, args.heads)) if nodes else MedusaDecoder(model))
            generation = decoder.generate(prompt, args.new_tokens)  # allocation, compilation, capture
            request_ms, _ = ms_per_step(decoder, prompt, args.new_tokens, 2)
        s = next(iter(decoder._sessions.values()))
        (prefill_graph,) = [graph for _, graph in s.prefills.values()]
        run = {"dependentLaunches": kernels.dependent_launches(device), "prefetch": prefetch, "nodes": nodes,
               "steps": generation.steps, "msPerStep": request_ms,
               "stepGraphMs": _graph_ms(s.graphs, 20),
               "prefillGraphMs": _graph_ms([prefill_graph], 3),
               "breakdown": breakdown(decoder, args.profile_steps)}
        run["prefillMsPerStep"] = run["prefillGraphMs"] / generation.steps
        runs.append(run)
        print(json.dumps(run), flush=True)
        decoder = None
        gc.collect()
        torch.cuda.empty_cache()
    result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "shape": args.shape,
              "promptTokens": args.prompt_tokens, "newTokens": args.new_tokens, "floorMs": floor_ms,
              "readBytesPerSecond": bandwidth["read"], "runs": runs}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"device {result['device']}, shape {args.shape}, floor {floor_ms:.3f} ms")
    for run in runs:
        b = run["breakdown"]
        print(f"-- {run['nodes']} nodes, dependent launches {run['dependentLaunches']}, prefetch "
              f"{'table' if run['prefetch'] is None else run['prefetch']}: "
              f"{run['msPerStep']:.3f} ms a step as a request sees it; step graphs "
              f"{run['stepGraphMs']:.3f} ms, prefill "
              f"{run['prefillGraphMs']:.2f} ms ({run['prefillMsPerStep']:.3f} ms a step over {run['steps']} steps)")
        if "error" in b:
            print("   ", b["error"])
            continue
        print(f"   kernels {b['kernelsPerStep']:.0f}, busy {b['busyUsPerStep']:.0f} us, "
              f"idle {b['idleUsPerStep']:.0f} us, span {b['spanUsPerStep']:.0f} us")
        for role, us in b["usPerStep"].items():
            n = b["launchesPerStep"][role]
            print(f"   {role:24s} {us:8.1f} us  ({n:.0f} launches, {us / n:.1f} us each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
