"""Greedy Medusa tree decoding over the static-cache Llama model.

One decoding step, all on the device with fixed shapes:

1. The heads read the hidden state of the last accepted token and propose their top-k tokens.
2. The tree's candidates (the root is the base model's own next token) are verified in one
   forward pass: node ``i`` sits at position ``n + depth(i)`` and attends to the cache
   ``[0, n)`` plus its ancestors in the tree.
3. The longest path whose every token equals the base model's greedy prediction at its parent
   is accepted; the root always is, so a step emits 1 to depth+1 tokens.
4. The accepted path's keys and values are moved to slots ``n, n+1, ...`` (KV compaction) and the
   prediction after the last accepted token becomes the next root.

Plain greedy decoding is the same step with an empty tree (one token per forward pass), so
base and Medusa timings come from the same code. On CUDA a step is captured once as CUDA graphs
of two parts, and the host reads a step's tokens while the next step's first part already runs
(with the kernels: the heads' proposals and the first ``AHEAD_LAYERS`` layers; otherwise the
whole step). When the read step ends the request, only that part was spent for nothing, not a
whole step ahead of the next request. The prompt's forward pass (prefill) is a graph too, one
per padded prompt length: its hundreds of small launches would otherwise cost a few
milliseconds of host time per request, as much as several steps.
With the Triton kernels, step 1's heads run on the features kept at the end of the previous step.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ..errors import UserError
from ..tree import sort_tree
from .heads import MedusaHeads
from .model import LlamaModel

if TYPE_CHECKING:
    from .kernels import CacheMoves

CACHE_BUCKET = 256
PREFILL_BUCKET = 32  # with CUDA graphs, prompts are padded to a multiple of this many tokens
GRAPHED_PREFILL_MAX = 1024  # longer prompts prefill without a graph: their own work dwarfs the launches
# With the kernels, the layers of a step launched before the previous step is read: enough GPU
# work, even for a model as small as SmolLM2-135M, to cover the host's read and next launch.
AHEAD_LAYERS = 4


@dataclass
class TreeBuffers:
    """Index tensors describing a tree of ``size - 1`` candidate nodes plus the root (index 0)."""

    size: int
    depth: int
    topk: int
    candidate_index: torch.Tensor  # [size-1] flat index into the heads' [heads, topk] proposals
    node_head: torch.Tensor  # [size-1] the head (depth - 1) proposing each non-root node, int32
    node_rank: torch.Tensor  # [size-1] its rank among that head's proposals, int32
    depths: torch.Tensor  # [size]
    ancestors: torch.Tensor  # [size, depth+1] node i's ancestor at each depth, i itself last, then padding
    paths: torch.Tensor  # [leaves, depth+1] node indices from the root to each leaf, padded
    path_valid: torch.Tensor  # [leaves, depth+1]


def build_tree_buffers(tree: Sequence[Sequence[int]], device: torch.device) -> TreeBuffers:
    nodes = [tuple(p) for p in sort_tree(tree)]
    index = {(): 0, **{p: i + 1 for i, p in enumerate(nodes)}}
    size = len(nodes) + 1
    depth = max((len(p) for p in nodes), default=0)
    topk = max((p[-1] for p in nodes), default=0) + 1
    ancestors = torch.zeros(size, depth + 1, dtype=torch.long)
    for p, i in index.items():
        ancestors[i] = i
        for d in range(len(p)):
            ancestors[i, d] = index[p[:d]]
    parents = {p[:-1] for p in nodes}
    leaves = [p for p in nodes if p not in parents] or [()]
    paths = torch.zeros(len(leaves), depth + 1, dtype=torch.long)
    valid = torch.zeros(len(leaves), depth + 1, dtype=torch.bool)
    for row, leaf in enumerate(leaves):
        for d in range(len(leaf) + 1):
            paths[row, d] = index[leaf[:d]]
            valid[row, d] = True
    return TreeBuffers(
        size=size,
        depth=depth,
        topk=topk,
        candidate_index=torch.tensor([(len(p) - 1) * topk + p[-1] for p in nodes], dtype=torch.long).to(device),
        node_head=torch.tensor([len(p) - 1 for p in nodes], dtype=torch.int32).to(device),
        node_rank=torch.tensor([p[-1] for p in nodes], dtype=torch.int32).to(device),
        depths=torch.tensor([0] + [len(p) for p in nodes], dtype=torch.long).to(device),
        ancestors=ancestors.to(device),
        paths=paths.to(device),
        path_valid=valid.to(device),
    )


@dataclass
class Generation:
    tokens: list[int]
    prompt_tokens: int
    steps: int
    accepted_per_step: list[int] = field(default_factory=list)  # draft tokens accepted each step
    draft_tokens_per_step: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_step(self) -> float:
        """Mean tokens emitted per forward pass (accepted draft tokens + the base token)."""
        return len(self.tokens) / self.steps if self.steps else 0.0

    @property
    def accepted_draft_tokens(self) -> int:
        return sum(self.accepted_per_step)

    @property
    def draft_tokens(self) -> int:
        return self.draft_tokens_per_step * self.steps


class _Session:
    """Static state for one cache size: the cache, step inputs/outputs and, on CUDA, the graph."""

    def __init__(self, decoder: "MedusaDecoder", max_len: int):
        model, device = decoder.model, decoder.model.device
        tb = decoder.tree
        self.max_len = max_len
        self.cache = model.new_cache(max_len)
        self.n = torch.zeros((), dtype=torch.long, device=device)
        self.root = torch.zeros((), dtype=torch.long, device=device)
        # What the heads read next step: the final-norm hidden state of the last accepted token,
        # or with the kernels the heads' features of it ([depth, hidden], float32).
        self.hidden = torch.zeros(model.cfg.hidden_size, dtype=model.dtype, device=device)
        self.features = torch.zeros(tb.depth, model.cfg.hidden_size, dtype=torch.float32, device=device)
        self.candidates = torch.zeros(tb.size, dtype=torch.long, device=device)
        self.tiles_done = torch.zeros(tb.depth, dtype=torch.int32, device=device)  # kernels.tree_candidates
        # A step's rows: their positions, cache slots and (kernels) residual stream, kept between its parts.
        self.positions = torch.zeros(tb.size, dtype=torch.long, device=device)
        self.slots = torch.zeros(tb.size, dtype=torch.long, device=device)
        self.x = torch.zeros(tb.size, model.cfg.hidden_size, dtype=torch.float32, device=device)
        self.out = torch.zeros(tb.depth + 2, dtype=torch.long, device=device)
        self.last = torch.zeros(1, dtype=torch.long, device=device)  # tree index of the last accepted node
        self.tree_slots = torch.arange(tb.size, device=device)
        self.path_slots = torch.arange(tb.depth + 1, device=device)
        self.graphs: list[torch.cuda.CUDAGraph] = []  # a step's parts: the one run ahead, then the rest
        self.host_out: list[torch.Tensor] = []
        self.events: list[torch.cuda.Event] = []
        # Graphed prefills by padded prompt length: their input buffer [length, tokens...] and graph.
        self.prefills: dict[int, tuple[torch.Tensor, torch.cuda.CUDAGraph]] = {}


def run_ahead(start: Callable[[int], None], finish: Callable[[int], None], read: Callable[[int], list[int]],
              more_needed: Callable[[], bool]):
    """Steps 0, 1, ... as ``start(i)``, ``finish(i)`` then ``read(i)``, yielding (first, rest)
    of each read.

    Step i + 1 is started before step i is read, so the GPU never waits for the host, and
    finished only once the caller asks for it; a request that ends at step i has spent only
    that start. Where ``more_needed()`` says the request may end within the next step (its
    token limit), step i + 1 is not started before the read either."""
    start(0)
    finish(0)
    i = 0
    while True:
        ahead = more_needed()
        if ahead:
            start(i + 1)
        out = read(i)
        yield out[0], out[1:]
        i += 1
        if not ahead:
            start(i)
        finish(i)


class MedusaDecoder:
    """Batch-1 greedy decoder; ``heads=None`` (or an empty tree) is plain greedy decoding."""

    def __init__(
        self,
        model: LlamaModel,
        heads: MedusaHeads | None = None,
        tree: Sequence[Sequence[int]] | None = None,
        *,
        use_cuda_graphs: bool | None = None,
        compile_step: bool = False,
        prefill_bucket: int | None = None,
        draft_tokens: torch.Tensor | None = None,
        head_tile_rows: int | None = None,
    ):
        """``prefill_bucket``: pad prompts to a multiple of this many tokens (default
        ``PREFILL_BUCKET`` with CUDA graphs, so one prefill graph serves a range of lengths, else
        1). Padding repeats the prompt's last token at its position: the padded rows compute
        what that token's row does and change nothing. ``draft_tokens``: the only tokens the
        heads may propose (ascending ids, ``heads.draft_vocabulary``); default all.
        ``head_tile_rows``: output rows per proposal program in the kernels (a power of two of at
        least 16; default ``kernels.HEAD_TILE_ROWS``), a tuning knob for ``step_cost.py``."""
        self.model = model
        tree = list(tree or []) if heads is not None else []
        if heads is not None and not tree:
            raise UserError("Medusa decoding needs a tree; give a preset, explicit choices or a calibrated tree")
        if heads is not None:
            depth = max(len(p) for p in tree)
            if depth > heads.num_heads:
                raise UserError(f"the tree is {depth} levels deep but the heads number {heads.num_heads}; use a shallower tree")
            vocab = model.cfg.vocab_size
            if draft_tokens is not None and (draft_tokens.dim() != 1 or draft_tokens.numel() == 0
                                             or int(draft_tokens.min()) < 0 or int(draft_tokens.max()) >= vocab):
                raise UserError(f"the draft vocabulary must be a non-empty list of token ids below {vocab}")
            rank = max(p[-1] for p in tree)
            proposable = vocab if draft_tokens is None else draft_tokens.shape[0]
            if rank >= proposable:
                raise UserError(f"the tree asks for the heads' rank-{rank} token but they choose from "
                                f"{proposable} tokens; use smaller ranks or a larger draft vocabulary")
            heads = heads.to(device=model.device, dtype=model.dtype).eval()
            for p in heads.parameters():
                p.requires_grad_(False)
        self.heads = heads
        self.draft_tokens = (draft_tokens.to(model.device, torch.long)
                             if heads is not None and draft_tokens is not None else None)
        self.tree = build_tree_buffers(tree, model.device)
        if heads is not None and model.kernels:
            from .kernels import HeadOutputs

            depth = self.tree.depth
            self._blocks = (heads.res_weight[:depth], heads.res_bias[:depth])
            outputs = heads.out_weight[:depth] if heads.has_output_layer else model.lm_head
            self._outputs = HeadOutputs.quantize(outputs, per_head=heads.has_output_layer, tokens=self.draft_tokens)
        if head_tile_rows is not None and (head_tile_rows < 16 or head_tile_rows & (head_tile_rows - 1)):
            raise UserError(f"head_tile_rows must be a power of two of at least 16, got {head_tile_rows}")
        self._head_tile_rows = head_tile_rows
        self._path_valid = self.tree.path_valid.to(torch.int8)
        self.use_cuda_graphs = model.device.type == "cuda" if use_cuda_graphs is None else use_cuda_graphs
        self.prefill_bucket = prefill_bucket or (PREFILL_BUCKET if self.use_cuda_graphs else 1)
        # Graphs of one decoder never run at once and keep nothing they return: they share a pool.
        self._graph_pool = torch.cuda.graph_pool_handle() if self.use_cuda_graphs else None
        # A step's parts, each its own graph: with the kernels the first is launched ahead (see
        # run_ahead); the torch operations run a step as one part, all of it launched ahead.
        # torch.compile fuses a part's many small kernels; shapes are static per cache size.
        parts = (self._begin_step, self._complete_step) if model.kernels else (self._whole_step,)
        self._step_parts = tuple(torch.compile(p, dynamic=False) for p in parts) if compile_step else parts
        self.compiled = compile_step
        self._ahead_layers = min(AHEAD_LAYERS, model.cfg.num_layers)
        self._sessions: dict[int, _Session] = {}

    # -- one step, pure tensor work on static buffers (graph-capturable) -----------------------
    def _whole_step(self, s: _Session) -> None:
        self._begin_step(s)
        self._complete_step(s)

    def _begin_step(self, s: _Session) -> None:
        """Step 1 and the rows' positions; with the kernels also the first ``AHEAD_LAYERS`` layers."""
        tb, model = self.tree, self.model
        if tb.size > 1:
            self._candidates(s)
        torch.add(s.n, tb.depths, out=s.positions)
        torch.add(s.n, s.tree_slots, out=s.slots)
        if model.kernels:
            s.x.copy_(model.embed.index_select(0, self._step_tokens(s)))
            model.decode_layers(s.x, range(self._ahead_layers), s.positions, s.n, tb.ancestors, s.cache, s.slots)

    def _complete_step(self, s: _Session) -> None:
        """Steps 2 to 4 from where ``_begin_step`` left off."""
        tb, model = self.tree, self.model
        candidates = self._step_tokens(s)
        if model.kernels:
            model.decode_layers(s.x, range(self._ahead_layers, model.cfg.num_layers), s.positions, s.n,
                                tb.ancestors, s.cache, s.slots)
            x = s.x
        else:
            x = model.decode(candidates, s.positions, s.n, tb.ancestors, s.cache, s.slots)
        predictions = model.next_tokens(x)
        moves = None
        if model.kernels:
            from . import kernels

            moves = kernels.accept(candidates, predictions, tb.paths, self._path_valid, s.n, s.out, s.root, s.last,
                                   s.cache.k, s.cache.v)
        else:
            self._accept(s, candidates, predictions)
        if tb.size > 1:
            self._remember(s, x, s.last, moves)

    def _step_tokens(self, s: _Session) -> torch.Tensor:
        return s.candidates if self.tree.size > 1 else s.root.view(1)

    def _candidates(self, s: _Session) -> None:
        """Step 1: ``s.candidates`` gets the root, then each node's proposal from the heads' top-k."""
        tb, model = self.tree, self.model
        if model.kernels:
            from . import kernels

            kernels.tree_candidates(s.features, self._outputs, tb.topk, s.root, tb.node_head, tb.node_rank,
                                    s.candidates, bf16=model.dtype == torch.bfloat16,
                                    tile_rows=self._head_tile_rows or kernels.HEAD_TILE_ROWS,
                                    tiles_done=s.tiles_done)
        else:
            proposals = self.heads(s.hidden.unsqueeze(0), model.lm_head, count=tb.depth)[:, 0]  # [depth, vocab]
            if self.draft_tokens is None:
                topk = proposals.topk(tb.topk, dim=-1).indices.flatten()
            else:
                ranked = proposals.index_select(-1, self.draft_tokens).topk(tb.topk, dim=-1).indices.flatten()
                topk = self.draft_tokens[ranked]
            s.candidates.copy_(torch.cat([s.root.view(1), topk.index_select(0, tb.candidate_index)]))

    def _remember(self, s: _Session, x: torch.Tensor, last: torch.Tensor,
                  moves: CacheMoves | None = None) -> None:
        """Keep what the heads need from row ``last`` of the residual stream ``x`` for the next step
        (with the kernels, carrying out the cache ``moves`` of ``kernels.accept`` alongside)."""
        model = self.model
        if model.kernels:
            from . import kernels

            kernels.head_features(x, last, model.final_norm, model.cfg.rms_norm_eps, *self._blocks, s.features,
                                  moves)
        else:
            s.hidden.copy_(model.final_hidden(x.index_select(0, last))[0])

    def _accept(self, s: _Session, candidates: torch.Tensor, predictions: torch.Tensor) -> None:
        """Steps 3 and 4 in torch operations (kernels: ``accept``; ``head_features`` moves the cache)."""
        tb = self.tree
        if tb.size > 1:
            matches = (candidates[tb.paths[:, 1:]] == predictions[tb.paths[:, :-1]]) & tb.path_valid[:, 1:]
            accepted = matches.long().cumprod(dim=1).sum(dim=1)
            best = accepted.argmax().view(1)
            length = accepted.index_select(0, best)
            path = tb.paths.index_select(0, best)[0]
            last = path.index_select(0, length)
            s.cache.move_slots(s.n + path, s.n + s.path_slots)
        else:
            length = torch.zeros(1, dtype=torch.long, device=predictions.device)
            path = s.path_slots
            last = path
        s.out[0].copy_(length[0])
        s.out[1:].copy_(candidates.index_select(0, path))
        s.root.copy_(predictions.index_select(0, last)[0])
        s.last.copy_(last)
        s.n.add_(length[0] + 1)

    def _session(self, needed: int) -> _Session:
        max_len = -(-needed // CACHE_BUCKET) * CACHE_BUCKET
        if max_len not in self._sessions:
            session = _Session(self, max_len)
            if self.use_cuda_graphs:
                self._capture(session)
            self._sessions[max_len] = session
        return self._sessions[max_len]

    def _capture(self, s: _Session) -> None:
        s.graphs = [self._graph(functools.partial(part, s)) for part in self._step_parts]
        s.host_out = [torch.zeros_like(s.out, device="cpu").pin_memory() for _ in range(2)]
        s.events = [torch.cuda.Event() for _ in range(2)]

    def _graph(self, work: Callable[[], None]) -> torch.cuda.CUDAGraph:
        """Capture ``work`` after three runs of it on a side stream (kernel compilation and
        allocations happen there, outside the capture). Its effects on the session's buffers
        are overwritten by the request that follows."""
        device = self.model.device
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):
                work()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool), torch.no_grad():
            work()
        return graph

    def _prefill_rows(self, length: int) -> int:
        if self.use_cuda_graphs and length > GRAPHED_PREFILL_MAX:
            return length
        return -(-length // self.prefill_bucket) * self.prefill_bucket

    def _prefill(self, s: _Session, prompt: list[int]) -> None:
        rows = self._prefill_rows(len(prompt))
        host = torch.tensor([len(prompt)] + prompt + [prompt[-1]] * (rows - len(prompt)))
        if not self.use_cuda_graphs or len(prompt) > GRAPHED_PREFILL_MAX:
            self._prefill_pass(s, host.to(self.model.device))
            return
        inputs, graph = self._prefill_graph(s, rows, host)
        inputs.copy_(host)
        graph.replay()

    def _prefill_graph(self, s: _Session, rows: int, host: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.CUDAGraph]:
        if rows not in s.prefills:
            inputs = host.to(self.model.device)
            s.prefills[rows] = (inputs, self._graph(functools.partial(self._prefill_pass, s, inputs)))
        return s.prefills[rows]

    @torch.no_grad()
    def _prefill_pass(self, s: _Session, inputs: torch.Tensor) -> None:
        """The prompt's forward pass; ``inputs`` holds its length, then its (padded) tokens."""
        model, device = self.model, self.model.device
        committed, tokens = inputs[0], inputs[1:]
        last = (committed - 1).view(1)
        positions = torch.minimum(torch.arange(tokens.shape[0], device=device), last)
        ancestors = torch.zeros(tokens.shape[0], 1, dtype=torch.long, device=device)
        x = model.decode(tokens, positions, committed, ancestors, s.cache, positions).index_select(0, last)
        s.root.copy_(model.next_tokens(x)[0])
        if self.tree.size > 1:
            self._remember(s, x, torch.zeros(1, dtype=torch.long, device=device))
        s.n.copy_(committed)

    def prepare(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Set up now (cache, CUDA graphs) what a request of this size needs, so that its first
        run pays no capture."""
        with self._on_device():
            s = self._session(self._positions_needed(prompt_tokens, max_new_tokens))
            if self.use_cuda_graphs and prompt_tokens <= GRAPHED_PREFILL_MAX:
                rows = self._prefill_rows(prompt_tokens)
                self._prefill_graph(s, rows, torch.tensor([prompt_tokens] + [0] * rows))

    def _positions_needed(self, prompt_tokens: int, max_new_tokens: int) -> int:
        tb = self.tree
        # Room for the prompt, the output, one overshooting step and one step run ahead.
        needed = prompt_tokens + max_new_tokens + 2 * (tb.depth + 1) + tb.size + 1
        if needed > self.model.cfg.max_positions:
            raise UserError(
                f"prompt ({prompt_tokens} tokens) plus max_tokens ({max_new_tokens}) exceed the model's "
                f"{self.model.cfg.max_positions} positions; shorten the prompt or ask for fewer tokens"
            )
        return needed

    def generate(self, prompt: Sequence[int], max_new_tokens: int, eos_ids: Sequence[int] = ()) -> Generation:
        with self._on_device():
            return self._generate(prompt, max_new_tokens, eos_ids)

    def _on_device(self) -> contextlib.AbstractContextManager:
        """Triton launches on the current device, which need not be the model's (cuda:1, ...)."""
        device = self.model.device
        return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()

    def _generate(self, prompt: Sequence[int], max_new_tokens: int, eos_ids: Sequence[int]) -> Generation:
        prompt = list(prompt)
        if not prompt:
            raise UserError("the prompt is empty; send at least one token of text")
        if max_new_tokens < 1:
            raise UserError(f"max_tokens must be at least 1, got {max_new_tokens}")
        tb = self.tree
        s = self._session(self._positions_needed(len(prompt), max_new_tokens))
        eos = set(eos_ids)
        start = time.perf_counter()
        self._prefill(s, prompt)
        result = Generation(tokens=[], prompt_tokens=len(prompt), steps=0, draft_tokens_per_step=tb.size - 1)

        def more_needed() -> bool:
            return len(result.tokens) + tb.depth + 1 < max_new_tokens  # a step emits at most depth + 1

        for length, tokens in self._steps(s, more_needed):
            result.steps += 1
            result.accepted_per_step.append(length)
            done = False
            for token in tokens[: length + 1]:
                if token in eos:
                    done = True
                    break
                result.tokens.append(token)
                if len(result.tokens) >= max_new_tokens:
                    done = True
                    break
            if done:
                break
        result.seconds = time.perf_counter() - start
        return result

    def _steps(self, s: _Session, more_needed: Callable[[], bool]):
        """Yield (accepted draft tokens, emitted tokens) per step until the caller stops."""
        if not s.graphs:
            while True:
                with torch.no_grad():
                    for part in self._step_parts:
                        part(s)
                out = s.out.tolist()
                yield out[0], out[1:]
        else:
            ahead, *rest = s.graphs

            def start(i: int) -> None:
                ahead.replay()

            def finish(i: int) -> None:
                for graph in rest:
                    graph.replay()
                s.host_out[i % 2].copy_(s.out, non_blocking=True)
                s.events[i % 2].record()

            def read(i: int) -> list[int]:
                s.events[i % 2].synchronize()
                return s.host_out[i % 2].tolist()

            yield from run_ahead(start, finish, read, more_needed)
