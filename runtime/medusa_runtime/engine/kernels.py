"""Batch-invariant Triton kernels for the decoding forward pass.

Medusa's promise is that tree decoding emits exactly the tokens plain greedy decoding would. On
a GPU that only holds if a token's hidden states come out bit-identical whether it is computed
alone (one-token step, prefill) or among the 30-60 tokens of a tree: library matrix products
pick different kernels, tile shapes and split reductions for different row counts, and in
bfloat16 those rounding differences flip greedy choices within a few hundred tokens. These
kernels make every row's arithmetic independent of the other rows:

- ``linear``: tile shapes chosen by the weight's shape alone (``LINEAR_TILE_TABLE``) and K
  spans by it and the card's SM count, never by the row count, and a fixed K order; each 16- or
  64-row tile is its own matrix product, which a one-token step pads its row to, so a program
  may take a whole 63-node tree (a weight block read once) without a row's bits changing;
  RMSNorm, bias, SiLU gate, residual and greedy argmax fused in; the residual stream stays in
  float32 while weights may be bfloat16, row-major or packed in the tiles' blocks (weights.py),
  which gives the same bits.
- ``attention``: keys are taken by *logical* position, in fixed chunks, then the chunks are
  combined in order. A tree node's ancestors live in scattered cache slots, so positions at or
  past ``committed`` are mapped through the node's ancestor list; the keys, their order and
  their grouping are then exactly those a one-token step would see at that position. Chunks
  wholly below ``committed`` are shared by all tokens and reduced for several tokens at once.
- ``accept``: greedy acceptance of a tree step; the KV compaction it decides rides along in
  the next launch, ``head_features``'.

The heads' side of a step has kernels too, for speed only (proposals never change what is
emitted): ``head_features`` (final norm and residual blocks of the last accepted token) and
``tree_candidates`` (int8 output layers, each head's top-k, the tree's tokens) in one launch.

They also cut a layer to seven launches, which matters more than bandwidth for small models at
batch 1; a 7-8B model's step is bound by reading its weights, and the tile table serves both.
``TRITON_INTERPRET=1`` runs them on the CPU (tests).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from medusa_runtime.engine.weights import PackedWeight

KEY_CHUNK = 128  # attention splits the keys into chunks of this many logical positions
# Query-head rows of an attention program's tile (at least): a chunk every token shares takes as
# many tokens' heads into one tile as fit, so its keys are read once for them all.
QUERY_TILE_ROWS = 16
WIDE = 8192  # output layers at least this wide (the vocabulary) get wider column tiles


@triton.jit
def _linear_rows(x_ptr, norm_ptr, rows, row_ok, ks, k_ok, wt, ut, acc, acc_up, squares, K,
                 HAS_NORM: tl.constexpr, GATED: tl.constexpr, IEEE: tl.constexpr):
    """One K block of one 16-row tile: the same arithmetic whichever tile or program holds the rows."""
    xt = tl.load(x_ptr + rows[:, None] * K + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
    if HAS_NORM:
        # RMSNorm folded in: scale by the norm weight now and by 1/rms(x) after the sum.
        squares += xt * xt
        xt = xt * tl.load(norm_ptr + ks, mask=k_ok, other=0.0).to(tl.float32)[None, :]
    xt = xt.to(wt.dtype)
    if IEEE:
        acc = tl.dot(xt, wt, acc, input_precision="ieee")
    else:
        acc = tl.dot(xt, wt, acc)
    if GATED:
        if IEEE:
            acc_up = tl.dot(xt, ut, acc_up, input_precision="ieee")
        else:
            acc_up = tl.dot(xt, ut, acc_up)
    return acc, acc_up, squares


@triton.jit
def _linear_finish(acc, acc_up, sum_squares, rows, row_ok, cols, col0, col_ok, tile, tiles, bias_ptr, res_ptr, out_ptr,
                   index_ptr, N, K, eps, HAS_NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
                   GATED: tl.constexpr, ARGMAX: tl.constexpr):
    """A row tile's epilogue; ``sum_squares`` [BM]: each row's sum of squares (RMSNorm)."""
    if HAS_NORM:
        rstd = 1.0 / tl.sqrt(sum_squares / K + eps)
        acc = acc * rstd[:, None]
        acc_up = acc_up * rstd[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if GATED:
        acc = acc * tl.sigmoid(acc) * acc_up
    if ARGMAX:
        # Each column tile's best score and its first column; greedy_tokens picks among tiles.
        scores = tl.where(col_ok[None, :], acc, float("-inf"))
        tl.store(out_ptr + rows * tiles + tile, tl.max(scores, axis=1), mask=row_ok)
        best = col0 + tl.argmax(scores, axis=1)
        tl.store(index_ptr + rows * tiles + tile, best, mask=row_ok)
    else:
        offsets = rows[:, None] * N + cols[None, :]
        ok = row_ok[:, None] & col_ok[None, :]
        if HAS_RES:
            acc += tl.load(res_ptr + offsets, mask=ok, other=0.0)
        tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _split_store(part_ptr, sq_ptr, split, acc, acc_up, squares, rows, row_ok, cols, col_ok, tile, tiles, M, N,
                 HAS_NORM: tl.constexpr, GATED: tl.constexpr):
    """One K split's partial sums of a row tile, for the split that finishes its columns last."""
    width = 2 * N if GATED else N
    ok = row_ok[:, None] & col_ok[None, :]
    offsets = (split * M + rows[:, None]) * width + cols[None, :]
    tl.store(part_ptr + offsets, acc, mask=ok)
    if GATED:
        tl.store(part_ptr + offsets + N, acc_up, mask=ok)
    if HAS_NORM:
        tl.store(sq_ptr + (split * tiles + tile) * M + rows, tl.sum(squares, axis=1),
                 mask=row_ok)


@triton.jit
def _split_sum(part_ptr, sq_ptr, rows, row_ok, cols, col_ok, tile, tiles, M, N, spans, BM: tl.constexpr,
               BN: tl.constexpr, HAS_NORM: tl.constexpr, GATED: tl.constexpr):
    """A row tile's sums over the ``spans`` K spans of its columns, always in K order (so never by
    arrival), read past the SM's own cache, which never held the other programs' stores."""
    width = 2 * N if GATED else N
    ok = row_ok[:, None] & col_ok[None, :]
    acc = tl.zeros((BM, BN), tl.float32)
    acc_up = tl.zeros((BM, BN), tl.float32)
    sum_squares = tl.zeros((BM,), tl.float32)
    for span in range(spans):
        offsets = (span * M + rows[:, None]) * width + cols[None, :]
        acc += tl.load(part_ptr + offsets, mask=ok, other=0.0, cache_modifier=".cg")
        if GATED:
            acc_up += tl.load(part_ptr + offsets + N, mask=ok, other=0.0, cache_modifier=".cg")
        if HAS_NORM:
            sum_squares += tl.load(sq_ptr + (span * tiles + tile) * M + rows, mask=row_ok,
                                   other=0.0, cache_modifier=".cg")
    return acc, acc_up, sum_squares


@triton.jit
def _after_previous_kernel(GDC: tl.constexpr):
    """With GDC (a programmatic dependent launch), wait until the kernel launched before this one
    has finished and its stores are visible, then let the next kernel's programs start arriving.
    Whatever a program does before this call must not touch memory another kernel writes."""
    if GDC:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _prefetch_weight(w_ptr, cols, col_ok, k_begin, k_end, K, BLOCKS: tl.constexpr, BK: tl.constexpr):
    """Ask the L2 cache for the first BLOCKS K blocks of these weight columns, a 128-byte line
    (64 bfloat16 values) per request. Weights are never written while decoding, so this may run
    before the previous kernel has finished: the read then overlaps that kernel's end."""
    lines = k_begin + tl.arange(0, BLOCKS * BK // 64) * 64
    ok = col_ok[:, None] & (lines[None, :] < k_end)
    ptrs = tl.where(ok, w_ptr + cols[:, None] * K + lines[None, :], w_ptr)
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def _accumulate(x_ptr, w_ptr, norm_ptr, rows0, M, cols, col_ok, tile, k_begin, k_end, N, K, HAS_NORM: tl.constexpr,
                GATED: tl.constexpr, IEEE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                ROW_TILES: tl.constexpr, PACKED: tl.constexpr):
    """The products of ROW_TILES row tiles from ``rows0`` with these weight columns (column tile
    ``tile``) over K from ``k_begin`` to ``k_end``, each weight block read once for them all:
    (product, up product, squares) per row tile. PACKED: the weight is a ``PackedWeight``'s
    blocks (``weights.py``), zero-padded, so its loads need no mask."""
    rows1 = rows0 + BM
    rows2 = rows1 + BM
    rows3 = rows2 + BM
    acc0 = tl.zeros((BM, BN), tl.float32)
    up0 = tl.zeros((BM, BN), tl.float32)
    sq0 = tl.zeros((BM, BK), tl.float32)
    acc1, up1, sq1 = acc0, up0, sq0
    acc2, up2, sq2 = acc0, up0, sq0
    acc3, up3, sq3 = acc0, up0, sq0
    for k0 in range(k_begin, k_end, BK):
        ks = k0 + tl.arange(0, BK)
        k_ok = ks < K
        if PACKED:
            block = tile * tl.cdiv(K, BK) + k0 // BK
            in_block = tl.arange(0, BN)[None, :] * BK + tl.arange(0, BK)[:, None]
            if GATED:
                wt = tl.load(w_ptr + block * (2 * BN * BK) + in_block)
                ut = tl.load(w_ptr + block * (2 * BN * BK) + BN * BK + in_block)
            else:
                wt = tl.load(w_ptr + block * (BN * BK) + in_block)
                ut = wt
        else:
            wt = tl.load(w_ptr + cols[None, :] * K + ks[:, None], mask=col_ok[None, :] & k_ok[:, None], other=0.0)
            ut = wt
            if GATED:
                ut = tl.load(w_ptr + (cols[None, :] + N) * K + ks[:, None], mask=col_ok[None, :] & k_ok[:, None],
                             other=0.0)
        acc0, up0, sq0 = _linear_rows(x_ptr, norm_ptr, rows0, rows0 < M, ks, k_ok, wt, ut, acc0, up0, sq0, K,
                                      HAS_NORM, GATED, IEEE)
        if ROW_TILES > 1:
            acc1, up1, sq1 = _linear_rows(x_ptr, norm_ptr, rows1, rows1 < M, ks, k_ok, wt, ut, acc1, up1, sq1, K,
                                          HAS_NORM, GATED, IEEE)
        if ROW_TILES > 2:
            acc2, up2, sq2 = _linear_rows(x_ptr, norm_ptr, rows2, rows2 < M, ks, k_ok, wt, ut, acc2, up2, sq2, K,
                                          HAS_NORM, GATED, IEEE)
        if ROW_TILES > 3:
            acc3, up3, sq3 = _linear_rows(x_ptr, norm_ptr, rows3, rows3 < M, ks, k_ok, wt, ut, acc3, up3, sq3, K,
                                          HAS_NORM, GATED, IEEE)
    return acc0, up0, sq0, acc1, up1, sq1, acc2, up2, sq2, acc3, up3, sq3


@triton.jit
def _finish_whole(acc0, up0, sq0, acc1, up1, sq1, acc2, up2, sq2, acc3, up3, sq3, rows0, M, cols, col0, col_ok,
                  tile, tiles, bias_ptr, res_ptr, out_ptr, index_ptr, N, K, eps, HAS_NORM: tl.constexpr,
                  HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, GATED: tl.constexpr, ARGMAX: tl.constexpr,
                  BM: tl.constexpr, ROW_TILES: tl.constexpr):
    """The epilogue of row tiles whose products took the whole K range in this program."""
    _linear_finish(acc0, up0, tl.sum(sq0, axis=1), rows0, rows0 < M, cols, col0, col_ok, tile, tiles, bias_ptr,
                   res_ptr, out_ptr, index_ptr, N, K, eps, HAS_NORM, HAS_BIAS, HAS_RES, GATED, ARGMAX)
    if ROW_TILES > 1:
        rows1 = rows0 + BM
        _linear_finish(acc1, up1, tl.sum(sq1, axis=1), rows1, rows1 < M, cols, col0, col_ok, tile, tiles, bias_ptr,
                       res_ptr, out_ptr, index_ptr, N, K, eps, HAS_NORM, HAS_BIAS, HAS_RES, GATED, ARGMAX)
    if ROW_TILES > 2:
        rows2 = rows0 + 2 * BM
        _linear_finish(acc2, up2, tl.sum(sq2, axis=1), rows2, rows2 < M, cols, col0, col_ok, tile, tiles, bias_ptr,
                       res_ptr, out_ptr, index_ptr, N, K, eps, HAS_NORM, HAS_BIAS, HAS_RES, GATED, ARGMAX)
    if ROW_TILES > 3:
        rows3 = rows0 + 3 * BM
        _linear_finish(acc3, up3, tl.sum(sq3, axis=1), rows3, rows3 < M, cols, col0, col_ok, tile, tiles, bias_ptr,
                       res_ptr, out_ptr, index_ptr, N, K, eps, HAS_NORM, HAS_BIAS, HAS_RES, GATED, ARGMAX)


@triton.jit
def _finish_span(acc0, up0, sq0, acc1, up1, sq1, acc2, up2, sq2, acc3, up3, sq3, part_ptr, sq_ptr, count_ptr,
                 counter, span, spans, rows0, M, cols, col0, col_ok, tile, tiles, bias_ptr, res_ptr, out_ptr,
                 index_ptr, N, K, eps, HAS_NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
                 GATED: tl.constexpr, ARGMAX: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                 ROW_TILES: tl.constexpr):
    """Store the partial sums of K span ``span`` of the column tile's ``spans``; the program that
    stores the last of them adds them all up in K order and applies the epilogue."""
    rows1 = rows0 + BM
    rows2 = rows1 + BM
    rows3 = rows2 + BM
    _split_store(part_ptr, sq_ptr, span, acc0, up0, sq0, rows0, rows0 < M, cols, col_ok, tile, tiles, M, N,
                 HAS_NORM, GATED)
    if ROW_TILES > 1:
        _split_store(part_ptr, sq_ptr, span, acc1, up1, sq1, rows1, rows1 < M, cols, col_ok, tile, tiles, M, N,
                     HAS_NORM, GATED)
    if ROW_TILES > 2:
        _split_store(part_ptr, sq_ptr, span, acc2, up2, sq2, rows2, rows2 < M, cols, col_ok, tile, tiles, M, N,
                     HAS_NORM, GATED)
    if ROW_TILES > 3:
        _split_store(part_ptr, sq_ptr, span, acc3, up3, sq3, rows3, rows3 < M, cols, col_ok, tile, tiles, M, N,
                     HAS_NORM, GATED)
    # The same handshake as the heads' merge: a barrier, then an acquire-release count.
    tl.debug_barrier()
    if tl.atomic_add(count_ptr + counter, 1, sem="acq_rel", scope="gpu") == spans - 1:
        tl.store(count_ptr + counter, 0)  # left zeroed for the next launch
        acc0, up0, ss0 = _split_sum(part_ptr, sq_ptr, rows0, rows0 < M, cols, col_ok, tile, tiles, M, N, spans,
                                    BM, BN, HAS_NORM, GATED)
        _linear_finish(acc0, up0, ss0, rows0, rows0 < M, cols, col0, col_ok, tile, tiles, bias_ptr, res_ptr,
                       out_ptr, index_ptr, N, K, eps, HAS_NORM, HAS_BIAS, HAS_RES, GATED, ARGMAX)
        if ROW_TILES > 1:
            acc1, up1, ss1 = _split_sum(part_ptr, sq_ptr, rows1, rows1 < M, cols, col_ok, tile, tiles, M, N, spans,
                                        BM, BN, HAS_NORM, GATED)
            _linear_finish(acc1, up1, ss1, rows1, rows1 < M, cols, col0, col_ok, tile, tiles, bias_ptr, res_ptr,
                           out_ptr, index_ptr, N, K, eps, HAS_NORM, HAS_BIAS, HAS_RES, GATED, ARGMAX)
        if ROW_TILES > 2:
            acc2, up2, ss2 = _split_sum(part_ptr, sq_ptr, rows2, rows2 < M, cols, col_ok, tile, tiles, M, N, spans,
                                        BM, BN, HAS_NORM, GATED)
            _linear_finish(acc2, up2, ss2, rows2, rows2 < M, cols, col0, col_ok, tile, tiles, bias_ptr, res_ptr,
                           out_ptr, index_ptr, N, K, eps, HAS_NORM, HAS_BIAS, HAS_RES, GATED, ARGMAX)
        if ROW_TILES > 3:
            acc3, up3, ss3 = _split_sum(part_ptr, sq_ptr, rows3, rows3 < M, cols, col_ok, tile, tiles, M, N, spans,
                                        BM, BN, HAS_NORM, GATED)
            _linear_finish(acc3, up3, ss3, rows3, rows3 < M, cols, col0, col_ok, tile, tiles, bias_ptr, res_ptr,
                           out_ptr, index_ptr, N, K, eps, HAS_NORM, HAS_BIAS, HAS_RES, GATED, ARGMAX)


# A run's length changes with the shape and the card: not specialised on, one compiled kernel serves them.
@triton.jit(do_not_specialize=["run_blocks"])
def _linear_kernel(x_ptr, w_ptr, bias_ptr, norm_ptr, res_ptr, out_ptr, index_ptr, part_ptr, sq_ptr, count_ptr,
                   M, N, K, k_span, run_blocks, eps, HAS_NORM: tl.constexpr, HAS_BIAS: tl.constexpr,
                   HAS_RES: tl.constexpr, GATED: tl.constexpr, ARGMAX: tl.constexpr, IEEE: tl.constexpr,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, ROW_TILES: tl.constexpr,
                   SPLIT: tl.constexpr, RUNS: tl.constexpr, GDC: tl.constexpr, PREFETCH: tl.constexpr,
                   PACKED: tl.constexpr):
    """Columns ``BN`` wide of ROW_TILES tiles of BM rows: each weight block is read once for all
    of the program's row tiles, each tile its own matrix product (so a row's arithmetic never
    depends on how many tiles share the program, nor on the other rows of its tile).

    With SPLIT > 1 the K range is cut into SPLIT spans of ``k_span`` (program axis 2), each
    program writing partial sums; the last of a column tile's programs to finish adds them up
    in split order and applies the epilogue. With RUNS, the projection's K blocks, column tile
    after column tile, are dealt out in runs of ``run_blocks``, one run a program: every program
    reads the same share of the weight, and a column tile cut by the runs' ends is summed like K
    splits. Either way the spans are a function of the weight and the card, never of the row
    count, so a row's bits never depend on it; a one-token step gets enough programs to keep
    the card's memory busy."""
    # Program axis 0 takes the row groups of a column tile (or run) one after another: a
    # prefill's programs that read the same weight block then run together, and the memory
    # serves them once.
    groups = tl.cdiv(M, BM * ROW_TILES)
    group = tl.program_id(0) % groups
    rows0 = group * (BM * ROW_TILES) + tl.arange(0, BM)
    tiles = tl.cdiv(N, BN)
    if RUNS:
        blocks = tl.cdiv(K, BK)
        first = tl.program_id(0) // groups * run_blocks
        end = tl.minimum(first + run_blocks, tiles * blocks)
        if PREFETCH > 0:
            cols = first // blocks * BN + tl.arange(0, BN)
            k_begin = (first % blocks) * BK
            k_end = tl.minimum(k_begin + (end - first) * BK, K)
            _prefetch_weight(w_ptr, cols, cols < N, k_begin, k_end, K, PREFETCH, BK)
            if GATED:
                _prefetch_weight(w_ptr, cols + N, cols < N, k_begin, k_end, K, PREFETCH, BK)
        _after_previous_kernel(GDC)
        for tile in range(first // blocks, (end - 1) // blocks + 1):
            col0 = tile * BN
            cols = col0 + tl.arange(0, BN)
            col_ok = cols < N
            begin = tl.maximum(first, tile * blocks)
            stop = tl.minimum(end, (tile + 1) * blocks)
            acc0, up0, sq0, acc1, up1, sq1, acc2, up2, sq2, acc3, up3, sq3 = _accumulate(
                x_ptr, w_ptr, norm_ptr, rows0, M, cols, col_ok, tile, (begin - tile * blocks) * BK,
                tl.minimum((stop - tile * blocks) * BK, K), N, K, HAS_NORM, GATED, IEEE, BM, BN, BK, ROW_TILES,
                PACKED)
            first_run = tile * blocks // run_blocks
            spans = ((tile + 1) * blocks - 1) // run_blocks - first_run + 1
            if spans == 1:
                _finish_whole(acc0, up0, sq0, acc1, up1, sq1, acc2, up2, sq2, acc3, up3, sq3, rows0, M, cols, col0,
                              col_ok, tile, tiles, bias_ptr, res_ptr, out_ptr, index_ptr, N, K, eps, HAS_NORM,
                              HAS_BIAS, HAS_RES, GATED, ARGMAX, BM, ROW_TILES)
            else:
                _finish_span(acc0, up0, sq0, acc1, up1, sq1, acc2, up2, sq2, acc3, up3, sq3, part_ptr, sq_ptr,
                             count_ptr, tile * groups + group, tl.program_id(0) // groups - first_run, spans, rows0,
                             M, cols, col0, col_ok, tile, tiles, bias_ptr, res_ptr, out_ptr, index_ptr, N, K, eps,
                             HAS_NORM, HAS_BIAS, HAS_RES, GATED, ARGMAX, BM, BN, ROW_TILES)
    else:
        tile = tl.program_id(0) // groups
        col0 = tile * BN
        cols = col0 + tl.arange(0, BN)
        col_ok = cols < N
        split = tl.program_id(2)
        k_begin = split * k_span
        k_end = tl.minimum(k_begin + k_span, K)
        if PREFETCH > 0:
            _prefetch_weight(w_ptr, cols, col_ok, k_begin, k_end, K, PREFETCH, BK)
            if GATED:
                _prefetch_weight(w_ptr, cols + N, col_ok, k_begin, k_end, K, PREFETCH, BK)
        _after_previous_kernel(GDC)
        acc0, up0, sq0, acc1, up1, sq1, acc2, up2, sq2, acc3, up3, sq3 = _accumulate(
            x_ptr, w_ptr, norm_ptr, rows0, M, cols, col_ok, tile, k_begin, k_end, N, K, HAS_NORM, GATED, IEEE, BM, BN,
            BK, ROW_TILES, PACKED)
        if SPLIT == 1:
            _finish_whole(acc0, up0, sq0, acc1, up1, sq1, acc2, up2, sq2, acc3, up3, sq3, rows0, M, cols, col0,
                          col_ok, tile, tiles, bias_ptr, res_ptr, out_ptr, index_ptr, N, K, eps, HAS_NORM, HAS_BIAS,
                          HAS_RES, GATED, ARGMAX, BM, ROW_TILES)
        else:
            _finish_span(acc0, up0, sq0, acc1, up1, sq1, acc2, up2, sq2, acc3, up3, sq3, part_ptr, sq_ptr, count_ptr,
                         tl.program_id(0), split, SPLIT, rows0, M, cols, col0, col_ok, tile, tiles, bias_ptr,
                         res_ptr, out_ptr, index_ptr, N, K, eps, HAS_NORM, HAS_BIAS, HAS_RES, GATED, ARGMAX, BM, BN,
                         ROW_TILES)


@dataclass(frozen=True)
class LinearTiles:
    """How ``_linear_kernel`` splits one projection. Only the column and K blocks and the K spans
    shape a row's arithmetic, and every choice here is a function of the weight and the card
    alone, so a row computes the same bits in a one-token step, a tree step or a prefill."""

    block_n: int  # output columns per program
    block_k: int  # K step of the loop
    warps: int
    stages: int | None  # software-pipelining depth; None: Triton's default
    row_tiles: int  # row tiles one program takes (1-4): each weight block is then read once for them all
    # Rows of one matrix-product tile. 16 suits small models; 64 lets Hopper's warpgroup matrix
    # instructions take a 63-node tree at once, a one-token step then padding its row to 64.
    block_m: int = 16
    # K spans summed apart, then added in order (1: none). Wide column tiles re-read a tree's
    # activations fewer times but leave few programs; splitting K gives the programs back.
    split_k: int = 1
    # K blocks of its weight a program asks the L2 cache for before waiting on the previous
    # kernel (dependent launches only; 0: none): the read overlaps the end of that kernel.
    prefetch: int = 0
    # 0: a program per column tile and K split. n > 0: n programs per SM, the K blocks of all
    # column tiles dealt out among them in equal runs (``split_k`` is then unused), so that no SM
    # idles while others read when the column tiles do not divide evenly among the SMs.
    programs_per_sm: int = 0
    # Whether a model keeps this projection's weight as a ``PackedWeight`` of these blocks
    # (weights.py), so that the blocks a program reads lie in one stretch of memory. The
    # layout moves no value of the arithmetic: either layout gives the same bits.
    packed: bool = False

    def __post_init__(self):
        if self.packed and self.prefetch:
            raise ValueError("prefetch asks for lines of row-major weight rows; a packed weight has none")

    @classmethod
    def from_json(cls, entry: dict) -> "LinearTiles":
        return cls(entry["blockN"], entry["blockK"], entry["warps"], entry.get("stages"), entry["rowTiles"],
                   entry.get("blockM", 16), entry.get("splitK", 1), entry.get("prefetch", 0),
                   entry.get("programsPerSm", 0), entry.get("packed", False))

    def to_json(self) -> dict:
        return {"blockN": self.block_n, "blockK": self.block_k, "warps": self.warps, "stages": self.stages,
                "rowTiles": self.row_tiles, "blockM": self.block_m, "splitK": self.split_k,
                "prefetch": self.prefetch, "programsPerSm": self.programs_per_sm, "packed": self.packed}


MAX_ROW_TILES = 4  # the kernel's unrolled limit: 4 x 16 rows (a 63-node tree) read a weight block once
# Projections at least this deep (a 1B model's hidden size or wider) are bound by reading their
# weights: without a table entry they get LARGE_WEIGHT_TILES rather than the small-model rule.
LARGE_K = 2048


def _rule_tiles(n: int, k: int, kind: str) -> LinearTiles:
    """The small-model rule (for models like SmolLM2-135M, whose steps are bound by launches, not
    bytes): narrow columns for many programs, one row tile per program."""
    wide = n >= WIDE
    block_k = 64 if wide or (kind in ("norm", "argmax") and k < 1024) else 256 if k >= 1024 else 128
    return LinearTiles(256 if wide else 32, block_k, 4 if wide else 2, None, 1)


# Tile choices by (kind, output width N, input width K), kind as in ``_tile_kind``: the winners of
# ``benchmarks/linear_tiles.py --rows 1 32 64 --prompt-rows 200`` (every candidate in CUDA graphs,
# weights rotating past the L2 cache; the least total time over a one-token step and 31- and
# 63-node trees wins, then the row tiles a prompt's programs take), one sweep of the three shapes;
# docs/runtime.md names the card and the results file (and the later one that timed the 7-8B
# entries in both weight layouts). Other cards may prefer others: the script
# prints entries for them. Each entry serves every row count of its projection, which keeps a
# row's bits the same in every step.
LINEAR_TILE_TABLE: dict[tuple[str, int, int], LinearTiles] = {
    # Llama-3-8B (Mistral-7B shares all but the output layer)
    ("norm", 6144, 4096): LinearTiles(128, 64, 4, 4, 1, 64, split_k=4, packed=True),
    ("plain", 4096, 4096): LinearTiles(64, 128, 4, 4, 2, 64, split_k=2),
    ("gated", 14336, 4096): LinearTiles(128, 64, 8, 4, 2, 64),
    ("plain", 4096, 14336): LinearTiles(64, 128, 4, 4, 2, 64, split_k=2, packed=True),
    ("argmax", 128256, 4096): LinearTiles(128, 64, 4, 3, 1, 64),
    # Qwen2-7B
    ("norm", 4608, 3584): LinearTiles(128, 64, 4, 3, 1, 64, programs_per_sm=2),
    ("plain", 3584, 3584): LinearTiles(64, 128, 4, 4, 2, 64, split_k=2),
    ("gated", 18944, 3584): LinearTiles(256, 64, 8, 3, 1, 64),
    ("plain", 3584, 18944): LinearTiles(64, 128, 4, 4, 2, 64, split_k=2),
    ("argmax", 152064, 3584): LinearTiles(128, 64, 4, 3, 1, 64, programs_per_sm=2),
    # Llama-3.2-1B
    ("norm", 3072, 2048): LinearTiles(128, 64, 4, 3, 1, 64, split_k=4),
    ("plain", 2048, 2048): LinearTiles(32, 128, 4, 3, 4, 64, split_k=2),
    ("gated", 8192, 2048): LinearTiles(128, 64, 4, 3, 1, 64, split_k=2),
    ("plain", 2048, 8192): LinearTiles(64, 128, 4, 4, 2, 64, programs_per_sm=1),
    ("argmax", 128256, 2048): LinearTiles(128, 64, 4, 3, 1, 64),
}
# Large projections no entry names (another model's shapes), by kind: what won most often above;
# for gate/up, where each shape chose differently, the 7-8B shape's choice.
LARGE_WEIGHT_TILES: dict[str, LinearTiles] = {
    "norm": LinearTiles(128, 64, 4, 3, 1, 64, split_k=4),
    "plain": LinearTiles(64, 128, 4, 4, 2, 64, split_k=2),
    "gated": LinearTiles(128, 64, 8, 4, 2, 64),
    "argmax": LinearTiles(128, 64, 4, 3, 1, 64),
}

_tile_override: list[dict | None] = [None]


@contextlib.contextmanager
def tile_table(table: dict[tuple[str, int, int], LinearTiles] | None):
    """Within it, projections take their tiles from ``table`` alone (a shape it lacks: the
    small-model rule; ``{}``: the rule everywhere, as before tiles came from a table), for
    benchmarks that compare tile choices. Launches captured in CUDA graphs keep their tiles."""
    _tile_override[0], previous = table, _tile_override[0]
    try:
        yield
    finally:
        _tile_override[0] = previous


# What a projection fuses in, which decides its tiles: nothing, an RMSNorm first, a SiLU gate
# (gate and up stacked), or a greedy argmax over the output layer.
TILE_KINDS = ("plain", "norm", "gated", "argmax")


def _tile_kind(norm, gated: bool, argmax: bool) -> str:
    return "gated" if gated else "argmax" if argmax else "norm" if norm is not None else "plain"


def linear_tiles(n: int, k: int, kind: str, element_size: int = 2) -> LinearTiles:
    """The tiles of a projection with output width ``n``, input width ``k`` and ``kind`` (plain,
    norm, gated or argmax) for weights of ``element_size`` bytes."""
    override = _tile_override[0]
    if override is not None:
        return override.get((kind, n, k)) or _rule_tiles(n, k, kind)
    if element_size == 2:  # the table's shared-memory budgets assume 16-bit weights
        if (kind, n, k) in LINEAR_TILE_TABLE:
            return LINEAR_TILE_TABLE[(kind, n, k)]
        if k >= LARGE_K:
            return LARGE_WEIGHT_TILES[kind]
    return _rule_tiles(n, k, kind)


def pack_for_tiles(weight: torch.Tensor, kind: str) -> torch.Tensor | PackedWeight:
    """``weight`` as its projection's tiles want it kept: a ``PackedWeight`` of their blocks
    where they say ``packed``, else itself. ``kind`` as ``linear_tiles`` takes it."""
    gated = kind == "gated"
    n = weight.shape[0] // 2 if gated else weight.shape[0]
    tiles = linear_tiles(n, weight.shape[1], kind, weight.element_size())
    return PackedWeight.pack(weight, tiles.block_n, tiles.block_k, gated) if tiles.packed else weight


# Whether the decoding kernels are launched as programmatic dependent launches where the GPU has
# them (compute capability 9.0, Hopper, and newer): each kernel's programs may then be placed on
# the GPU while the previous kernel finishes, and wait there for its results, so a layer's
# chain of launches leaves no gap between kernels.
DEPENDENT_LAUNCHES = True
_dependent_launch_devices: dict[torch.device, bool] = {}


def dependent_launches(device: torch.device) -> bool:
    """Whether launches on ``device`` are programmatic dependent launches (``DEPENDENT_LAUNCHES``)."""
    if not DEPENDENT_LAUNCHES or device.type != "cuda":
        return False
    if device not in _dependent_launch_devices:
        _dependent_launch_devices[device] = torch.cuda.get_device_capability(device)[0] >= 9
    return _dependent_launch_devices[device]


def _launch_options(gdc: bool) -> dict:
    return {"GDC": True, "launch_pdl": True} if gdc else {"GDC": False}


_split_counters: dict[torch.device, torch.Tensor] = {}


def _split_counter(count: int, device: torch.device) -> torch.Tensor:
    """Zeroed int32 counters for K-split launches, shared by all of them on ``device``: launches
    on one stream run one after another, and each leaves its counters zeroed. Made outside CUDA
    graph capture (a decoder runs a step before capturing it), so graphs keep referring to them."""
    counters = _split_counters.get(device)
    if counters is None or counters.numel() < count:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("a K-split projection needs more counters than were made before CUDA graph capture; "
                               "run the captured work once outside capture first")
        counters = torch.zeros(max(count, 4096), dtype=torch.int32, device=device)
        _split_counters[device] = counters
    return counters


# The SM count a launch deals runs out for; the CPU interpreter runs programs one at a time,
# and any count keeps its arithmetic exact, so it takes a small one that cuts column tiles.
INTERPRETED_SMS = 3
_sm_counts: dict[torch.device, int] = {}


def sm_count(device: torch.device) -> int:
    if device not in _sm_counts:
        _sm_counts[device] = (torch.cuda.get_device_properties(device).multi_processor_count
                              if device.type == "cuda" else INTERPRETED_SMS)
    return _sm_counts[device]


@dataclass(frozen=True)
class LinearLaunch:
    """How one projection's launch covers its K range: programs along grid axes 0 and 2 and the
    most K spans a column tile's sum takes (1: every program sums its columns whole)."""

    programs: int  # per row group
    splits: int  # grid axis 2 (K splits); 1 with runs
    k_span: int  # K values a split covers
    run_blocks: int  # K blocks a run covers (0: no runs)
    spans: int


def linear_launch(n: int, k: int, tiles: LinearTiles, sms: int) -> LinearLaunch:
    column_tiles, blocks = triton.cdiv(n, tiles.block_n), triton.cdiv(k, tiles.block_k)
    if tiles.programs_per_sm:
        run_blocks = triton.cdiv(column_tiles * blocks, tiles.programs_per_sm * sms)
        # A column tile's blocks meet at most cdiv(blocks, run_blocks) + 1 runs.
        spans = min(triton.cdiv(blocks, run_blocks) + 1, triton.cdiv(column_tiles * blocks, run_blocks))
        return LinearLaunch(triton.cdiv(column_tiles * blocks, run_blocks), 1, 0, run_blocks, spans)
    k_span = triton.cdiv(blocks, tiles.split_k) * tiles.block_k
    split = triton.cdiv(k, k_span)
    return LinearLaunch(column_tiles, split, k_span, 0, split)


def _launch_linear(x, weight, out, index, n, *, bias=None, norm=None, eps=1e-6, residual=None, gated=False,
                   argmax=False) -> None:
    rows, k = x.shape
    tiles = linear_tiles(n, k, _tile_kind(norm, gated, argmax), weight.element_size())
    packed = isinstance(weight, PackedWeight)
    if packed:
        if (weight.block_n, weight.block_k, weight.gated, weight.k) != (tiles.block_n, tiles.block_k, gated, k):
            raise ValueError(
                f"a weight packed in {weight.block_n}x{weight.block_k} blocks (gated: {weight.gated}, K {weight.k}) "
                f"cannot be read as {tiles.block_n}x{tiles.block_k} blocks (gated: {gated}, K {k}); pack it "
                "under the tile table it is used with (pack_for_tiles)")
        weight = weight.data
    row_tiles = min(tiles.row_tiles, triton.cdiv(rows, tiles.block_m))
    groups = triton.cdiv(rows, tiles.block_m * row_tiles)
    plan = linear_launch(n, k, tiles, sm_count(x.device))
    grid = (plan.programs * groups, 1, plan.splits)
    if plan.spans > 1:
        column_tiles = triton.cdiv(n, tiles.block_n)
        part = torch.empty(plan.spans, rows, 2 * n if gated else n, dtype=torch.float32, device=x.device)
        squares = torch.empty(plan.spans, column_tiles, rows, dtype=torch.float32, device=x.device)
        counters = _split_counter(column_tiles * groups, x.device)
    else:
        part = squares = counters = out  # never read
    pipelining = {} if tiles.stages is None else {"num_stages": tiles.stages}
    gdc = dependent_launches(x.device)
    _linear_kernel[grid](
        x, weight, bias if bias is not None else weight, norm if norm is not None else weight,
        residual if residual is not None else out, out, index, part, squares, counters, rows, n, k, plan.k_span,
        plan.run_blocks, eps, HAS_NORM=norm is not None, HAS_BIAS=bias is not None, HAS_RES=residual is not None,
        GATED=gated, ARGMAX=argmax, IEEE=weight.dtype == torch.float32, BM=tiles.block_m, BN=tiles.block_n,
        BK=tiles.block_k, ROW_TILES=row_tiles, SPLIT=plan.splits, RUNS=plan.run_blocks > 0, num_warps=tiles.warps,
        PREFETCH=tiles.prefetch if gdc else 0, PACKED=packed, **_launch_options(gdc), **pipelining,
    )


def linear(x: torch.Tensor, weight: torch.Tensor, *, bias: torch.Tensor | None = None,
           norm: torch.Tensor | None = None, eps: float = 1e-6, residual: torch.Tensor | None = None,
           gated: bool = False, out: torch.Tensor | None = None,
           out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """float32 ``[M, K]`` -> ``[M, N]``: ``residual + act(rmsnorm(x) @ weight.T + bias)``.

    With ``gated`` the weight stacks gate and up projections (``[2N, K]``) and the result is
    ``silu(gate) * up``. ``out`` may be ``residual`` itself (in place). ``x`` may also come in
    the weight's dtype where no norm needs its float32 values: the kernel rounds it to that
    dtype before the product anyway, so a result stored in it (``out_dtype``) for the next
    projection changes no bit there and halves what a tree's tiles re-read.
    """
    n = weight.shape[0] // 2 if gated else weight.shape[0]
    if out is None:
        out = torch.empty(x.shape[0], n, dtype=out_dtype, device=x.device)
    _launch_linear(x, weight, out, out, n, bias=bias, norm=norm, eps=eps, residual=residual, gated=gated)
    return out


def greedy_tokens(x: torch.Tensor, weight: torch.Tensor, *, norm: torch.Tensor | None = None,
                  eps: float = 1e-6) -> torch.Tensor:
    """``argmax(rmsnorm(x) @ weight.T)`` per row, the lowest index among equal scores, without
    writing the logits out."""
    rows, k = x.shape
    n = weight.shape[0]
    tiles = triton.cdiv(n, linear_tiles(n, k, _tile_kind(norm, False, True), weight.element_size()).block_n)
    best = torch.empty(rows, tiles, dtype=torch.float32, device=x.device)
    index = torch.empty(rows, tiles, dtype=torch.int32, device=x.device)
    _launch_linear(x, weight, best, index, n, norm=norm, eps=eps, argmax=True)
    return index.gather(1, best.argmax(dim=1, keepdim=True)).squeeze(1).long()


@triton.jit
def _rope_store_kernel(qkv_ptr, cos_ptr, sin_ptr, pos_ptr, slot_ptr, q_ptr, k_cache_ptr, v_cache_ptr, head_stride,
                       HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEADS_PAD: tl.constexpr,
                       KV_PAD: tl.constexpr, D: tl.constexpr, GDC: tl.constexpr):
    """One token's row: rotate its query and key heads (as one [heads, D/2] tile per half), keep
    the queries, write keys and values to the token's cache slot."""
    _after_previous_kernel(GDC)
    row = tl.program_id(0)
    heads = tl.arange(0, HEADS_PAD)[:, None]  # query heads, then key heads
    half = tl.arange(0, D // 2)[None, :]
    rotated = heads < HEADS + KV_HEADS
    width = (HEADS + 2 * KV_HEADS) * D
    src = qkv_ptr + row * width + heads * D
    x1 = tl.load(src + half, mask=rotated, other=0.0)
    x2 = tl.load(src + D // 2 + half, mask=rotated, other=0.0)
    position = tl.load(pos_ptr + row)
    cos = tl.load(cos_ptr + position * (D // 2) + half)
    sin = tl.load(sin_ptr + position * (D // 2) + half)
    first = x1 * cos - x2 * sin
    second = x2 * cos + x1 * sin
    query = heads < HEADS  # queries stay float32; keys and values are stored in the cache's dtype
    q_dst = q_ptr + (row * HEADS + heads) * D
    tl.store(q_dst + half, first, mask=query)
    tl.store(q_dst + D // 2 + half, second, mask=query)
    key = rotated & (heads >= HEADS)
    slot = tl.load(slot_ptr + row)
    k_dst = k_cache_ptr + (heads - HEADS) * head_stride + slot * D
    tl.store(k_dst + half, first.to(k_cache_ptr.dtype.element_ty), mask=key)
    tl.store(k_dst + D // 2 + half, second.to(k_cache_ptr.dtype.element_ty), mask=key)
    kv_heads = tl.arange(0, KV_PAD)[:, None]
    dims = tl.arange(0, D)[None, :]
    value = tl.load(qkv_ptr + row * width + (HEADS + KV_HEADS + kv_heads) * D + dims, mask=kv_heads < KV_HEADS)
    tl.store(v_cache_ptr + kv_heads * head_stride + slot * D + dims, value.to(v_cache_ptr.dtype.element_ty),
             mask=kv_heads < KV_HEADS)


def rope_and_store(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                   slots: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int, kv_heads: int,
                   head_dim: int) -> torch.Tensor:
    """Rotate queries and keys of ``qkv`` [T, (H + 2KV) * D]; write keys and values to cache
    ``slots`` ([KV, slots, D] per layer); return the queries [T, H, D]."""
    rows = qkv.shape[0]
    q = torch.empty(rows, heads, head_dim, dtype=torch.float32, device=qkv.device)
    _rope_store_kernel[(rows,)](
        qkv, cos, sin, positions, slots, q, k_cache, v_cache, k_cache.stride(0),
        HEADS=heads, KV_HEADS=kv_heads, HEADS_PAD=triton.next_power_of_2(heads + kv_heads),
        KV_PAD=triton.next_power_of_2(kv_heads), D=head_dim, **_launch_options(dependent_launches(qkv.device)),
    )
    return q


@triton.jit
def _attention_chunk_kernel(q_ptr, k_cache_ptr, v_cache_ptr, part_ptr, stat_ptr, pos_ptr, committed_ptr, anc_ptr,
                            anc_stride, head_stride, rows, scale, HEADS: tl.constexpr, GROUP: tl.constexpr,
                            PACK: tl.constexpr, TILE: tl.constexpr, D: tl.constexpr, CHUNK: tl.constexpr,
                            IEEE: tl.constexpr, GDC: tl.constexpr):
    """One chunk of keys for the query heads of one kv head, as one matrix tile of queries.

    A chunk wholly below ``committed`` holds the same keys for every token, so the program of
    every PACK-th token takes the query heads of PACK tokens into its tile and the others stop;
    a chunk reaching past ``committed`` maps positions through each token's own ancestors, so
    each token's program takes only its own. A token's rows of a tile are computed alone
    either way (the tile's other rows never mix into them), so both give the same bits."""
    _after_previous_kernel(GDC)
    row = tl.program_id(0)
    kv_head = tl.program_id(1)
    chunk = tl.program_id(2)
    committed = tl.load(committed_ptr)
    start = chunk * CHUNK
    shared = start + CHUNK <= committed
    members = tl.arange(0, TILE)
    tokens = row + members // GROUP
    taken = tl.where(shared, tl.where(row % PACK == 0, PACK * GROUP, 0), GROUP)
    member_ok = (members < taken) & (tokens < rows)
    position = tl.load(pos_ptr + tokens, mask=member_ok, other=-1)
    if tl.max(position, axis=0) >= start:
        heads = tokens * HEADS + kv_head * GROUP + members % GROUP
        dims = tl.arange(0, D)
        q = tl.load(q_ptr + heads[:, None] * D + dims[None, :], mask=member_ok[:, None], other=0.0)
        logical = start + tl.arange(0, CHUNK)
        needed = logical <= tl.max(position, axis=0)
        in_tree = needed & (logical >= committed)
        ancestor = tl.load(anc_ptr + row * anc_stride + (logical - committed), mask=in_tree, other=0)
        slot = tl.where(logical < committed, logical, committed + ancestor)
        kv_offsets = kv_head * head_stride + slot[:, None] * D + dims[None, :]
        keys = tl.load(k_cache_ptr + kv_offsets, mask=needed[:, None], other=0.0)
        values = tl.load(v_cache_ptr + kv_offsets, mask=needed[:, None], other=0.0)
        if IEEE:
            scores = tl.dot(q, tl.trans(keys), input_precision="ieee")
        else:
            scores = tl.dot(q.to(keys.dtype), tl.trans(keys))
        scores = tl.where(logical[None, :] <= position[:, None], scores * scale, float("-inf"))
        best = tl.maximum(tl.max(scores, axis=1), -1e30)  # finite in rows that see no key (never stored)
        weights = tl.exp(scores - best[:, None])
        if IEEE:
            part = tl.dot(weights, values, input_precision="ieee")
        else:
            part = tl.dot(weights.to(values.dtype), values)
        stored = member_ok & (position >= start)
        index = heads * tl.num_programs(2) + chunk
        tl.store(part_ptr + index[:, None] * D + dims[None, :], part, mask=stored[:, None])
        tl.store(stat_ptr + index * 2, best, mask=stored)
        tl.store(stat_ptr + index * 2 + 1, tl.sum(weights, axis=1), mask=stored)


@triton.jit
def _attention_combine_kernel(part_ptr, stat_ptr, out_ptr, pos_ptr, CHUNKS: tl.constexpr, HEADS: tl.constexpr,
                              D: tl.constexpr, CHUNK: tl.constexpr, GDC: tl.constexpr):
    _after_previous_kernel(GDC)
    row = tl.program_id(0)
    head = tl.program_id(1)
    used = tl.load(pos_ptr + row) // CHUNK + 1
    chunks = tl.arange(0, CHUNKS)
    ok = chunks < used
    base = (row * HEADS + head) * CHUNKS
    best = tl.load(stat_ptr + (base + chunks) * 2, mask=ok, other=float("-inf"))
    total = tl.load(stat_ptr + (base + chunks) * 2 + 1, mask=ok, other=0.0)
    top = tl.max(best, axis=0)
    rescale = tl.where(ok, tl.exp(best - top), 0.0)
    dims = tl.arange(0, D)
    parts = tl.load(part_ptr + (base + chunks)[:, None] * D + dims[None, :], mask=ok[:, None], other=0.0)
    out = tl.sum(parts * rescale[:, None], axis=0) / tl.sum(total * rescale, axis=0)
    tl.store(out_ptr + (row * HEADS + head) * D + dims, out.to(out_ptr.dtype.element_ty))


def attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, positions: torch.Tensor,
              committed: torch.Tensor, ancestors: torch.Tensor, kv_heads: int,
              out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Causal attention of queries [T, H, D] over one layer's cache [KV, slots, D].

    Token ``t`` at position ``p`` attends logical positions ``0..p``: those below ``committed``
    are cache slots of the same number; position ``committed + d`` is slot
    ``committed + ancestors[t, d]`` (the tree node's ancestor at depth ``d``, itself last).
    Keys are split into fixed chunks of logical positions, each reduced for all query heads of
    a kv head as one tile, then combined in chunk order. Returns [T, H * D] in ``out_dtype``
    (the output projection's weight dtype: ``linear`` rounds to it first anyway).
    """
    rows, heads, head_dim = q.shape
    group = heads // kv_heads
    tile = max(QUERY_TILE_ROWS, triton.next_power_of_2(group))
    chunks = triton.next_power_of_2(triton.cdiv(k_cache.shape[1], KEY_CHUNK))
    part = torch.empty(rows, heads, chunks, head_dim, dtype=torch.float32, device=q.device)
    stats = torch.empty(rows, heads, chunks, 2, dtype=torch.float32, device=q.device)
    _attention_chunk_kernel[(rows, kv_heads, chunks)](
        q, k_cache, v_cache, part, stats, positions, committed, ancestors, ancestors.stride(0), k_cache.stride(0),
        rows, head_dim**-0.5, HEADS=heads, GROUP=group, PACK=tile // group, TILE=tile, D=head_dim, CHUNK=KEY_CHUNK,
        IEEE=k_cache.dtype == torch.float32, **_launch_options(dependent_launches(q.device)),
    )
    out = torch.empty(rows, heads * head_dim, dtype=out_dtype, device=q.device)
    # One warp a program: a tree's 30-60 rows launch hundreds of these small programs, each with
    # one head's few chunks to combine, too little work to share among more warps.
    _attention_combine_kernel[(rows, heads)](part, stats, out, positions, CHUNKS=chunks, HEADS=heads, D=head_dim,
                                             CHUNK=KEY_CHUNK, num_warps=1,
                                             **_launch_options(dependent_launches(q.device)))
    return out


@triton.jit
def _head_block_kernel(src_ptr, last_ptr, norm_ptr, w_ptr, b_ptr, out_ptr, eps, w_stride, b_stride, heads,
                       k_ptr, v_ptr, moves_ptr, layer_stride, kv_stride, kv_pairs, K: tl.constexpr,
                       FROM_STREAM: tl.constexpr, HAS_BLOCK: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                       MOVES: tl.constexpr, KV_HEADS: tl.constexpr, LEVELS: tl.constexpr,
                       LEVELS_PAD: tl.constexpr, D: tl.constexpr):
    """Columns of ``x + silu(W_h x + b_h)`` for head ``h``; x is the final-norm residual-stream row
    ``last`` (FROM_STREAM, every head) or head h's own row of ``src``. One pass over K: the norm's
    1/rms is a scalar, so it is gathered alongside the products and applied at the end.
    With MOVES, programs past the heads' carry out the step's cache moves, one (layer, kv head)
    pair each."""
    head = tl.program_id(0)
    if MOVES and head >= heads:
        pair = (head - heads) * tl.num_programs(1) + tl.program_id(1)
        if pair < kv_pairs:
            _move_kv(k_ptr, v_ptr, moves_ptr, (pair // KV_HEADS) * layer_stride + (pair % KV_HEADS) * kv_stride,
                     LEVELS, LEVELS_PAD, D)
    else:
        cols = tl.program_id(1) * BN + tl.arange(0, BN)
        col_ok = cols < K
        if FROM_STREAM:
            row_ptr = src_ptr + tl.load(last_ptr) * K
        else:
            row_ptr = src_ptr + head * K
        squares = tl.zeros((BK,), tl.float32)
        partial = tl.zeros((BN, BK), tl.float32)
        for k0 in range(0, K, BK):
            ks = k0 + tl.arange(0, BK)
            k_ok = ks < K
            xs = tl.load(row_ptr + ks, mask=k_ok, other=0.0)
            squares += xs * xs
            if HAS_BLOCK:
                if FROM_STREAM:
                    xs = xs * tl.load(norm_ptr + ks, mask=k_ok, other=0.0).to(tl.float32)
                w = tl.load(w_ptr + head * w_stride + cols[:, None] * K + ks[None, :],
                            mask=col_ok[:, None] & k_ok[None, :], other=0.0)
                partial += w.to(tl.float32) * xs[None, :]
        own = tl.load(row_ptr + cols, mask=col_ok, other=0.0)
        rstd = 1.0
        if FROM_STREAM:
            rstd = 1.0 / tl.sqrt(tl.sum(squares, axis=0) / K + eps)
            own = own * rstd * tl.load(norm_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        if HAS_BLOCK:
            acc = tl.sum(partial, axis=1) * rstd + tl.load(b_ptr + head * b_stride + cols, mask=col_ok,
                                                           other=0.0).to(tl.float32)
            own += acc * tl.sigmoid(acc)
        tl.store(out_ptr + head * K + cols, own, mask=col_ok)


def head_features(x: torch.Tensor, last: torch.Tensor, norm: torch.Tensor, eps: float, weights: torch.Tensor,
                  biases: torch.Tensor, out: torch.Tensor, moves: CacheMoves | None = None) -> None:
    """Medusa heads' residual blocks on the final-norm hidden state of row ``last`` of the residual
    stream ``x`` [T, K]: ``out`` [heads, K] float32. ``weights`` [heads, layers, K, K] and ``biases``
    [heads, layers, K] (rows contiguous); no layers gives every head the hidden state itself.
    ``moves`` (from ``accept``) are carried out by extra programs of the first launch."""
    heads, layers, k = weights.shape[0], weights.shape[1], x.shape[1]
    # Narrow column tiles: one feature row against a small K x K block needs many programs, not
    # wide ones, to keep the memory busy (docs/runtime.md has the timings).
    block_n, block_k = 16, 128
    col_tiles = triton.cdiv(k, block_n)
    has_block = layers > 0
    src = x
    for layer in range(max(layers, 1)):
        # A layer reads every column of the previous one: each layer is its own launch, and the
        # first reads the stream while later ones read a copy of the previous output.
        if layer:
            src = out.clone()
        move_args, move_consts = _move_args(moves if layer == 0 else None, out)
        _head_block_kernel[(heads + triton.cdiv(move_args[-1], col_tiles), col_tiles)](
            src, last, norm, weights[:, layer] if has_block else x, biases[:, layer] if has_block else x, out, eps,
            weights.stride(0), biases.stride(0), heads, *move_args, K=k, FROM_STREAM=layer == 0,
            HAS_BLOCK=has_block, BN=block_n, BK=block_k, **move_consts, num_warps=2,
        )


@triton.jit
def _rank_key(score, token):
    """An int64 that orders like (score, -token): the largest key is the best score, the lowest
    token among equal scores. One max reduction then finds both."""
    bits = score.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (ordered.to(tl.int64) << 32) | (0x7FFFFFFF - token).to(tl.int64)


@triton.jit
def _shared_head_topk_kernel(feat_ptr, w_ptr, scale_ptr, key_ptr, done_ptr, root_ptr, node_head_ptr, node_rank_ptr,
                             tokens_ptr, cand_ptr, heads, N, K: tl.constexpr, PER_PROGRAM: tl.constexpr,
                             TOPK: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BF16: tl.constexpr,
                             TOPK_PAD: tl.constexpr, COUNT_PAD: tl.constexpr, NODES: tl.constexpr,
                             NODES_PAD: tl.constexpr, HAS_TOKENS: tl.constexpr):
    """The TOPK best logits within one column tile of the shared lm_head, as rank keys, for
    PER_PROGRAM heads at once: the weight tile is read once for all of them. The group's last
    tile to finish merges its heads' tiles (``_merge_tiles``)."""
    first = tl.program_id(0) * PER_PROGRAM
    tile = tl.program_id(1)
    members = tl.arange(0, 16)
    member_ok = (members < PER_PROGRAM) & (first + members < heads)
    cols = tile * BN + tl.arange(0, BN)
    col_ok = cols < N
    acc = tl.zeros((16, BN), tl.float32)
    for k0 in range(0, K, BK):
        ks = k0 + tl.arange(0, BK)
        k_ok = ks < K
        f = tl.load(feat_ptr + (first + members[:, None]) * K + ks[None, :],
                    mask=member_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + cols[None, :] * K + ks[:, None], mask=col_ok[None, :] & k_ok[:, None], other=0)
        if BF16:
            acc = tl.dot(f.to(tl.bfloat16), w.to(tl.bfloat16), acc)
        else:
            acc = tl.dot(f, w.to(tl.float32), acc, input_precision="ieee")
    scale = tl.load(scale_ptr + cols, mask=col_ok, other=0.0)
    keys = _rank_key(tl.where(col_ok[None, :], acc * scale[None, :], float("-inf")), cols[None, :])
    base = ((first + members) * tl.num_programs(1) + tile) * TOPK
    for rank in tl.static_range(TOPK):
        best = tl.max(keys, axis=1)
        tl.store(key_ptr + base + rank, best, mask=member_ok)
        keys = tl.where(keys == best[:, None], -(2**63) + 1, keys)
    if _last_to_finish(done_ptr + tl.program_id(0)):
        for member in range(PER_PROGRAM):
            if first + member < heads:
                _merge_tiles(key_ptr, first + member, tl.num_programs(1) * TOPK, root_ptr, node_head_ptr,
                             node_rank_ptr, tokens_ptr, cand_ptr, TOPK, TOPK_PAD, COUNT_PAD, NODES, NODES_PAD,
                             HAS_TOKENS)


@triton.jit
def _own_head_topk_kernel(feat_ptr, w_ptr, scale_ptr, key_ptr, done_ptr, root_ptr, node_head_ptr, node_rank_ptr,
                          tokens_ptr, cand_ptr, N, K: tl.constexpr, TOPK: tl.constexpr, BN: tl.constexpr,
                          BK: tl.constexpr, TOPK_PAD: tl.constexpr, COUNT_PAD: tl.constexpr, NODES: tl.constexpr,
                          NODES_PAD: tl.constexpr, HAS_TOKENS: tl.constexpr):
    """The TOPK best logits within one column tile of one head's own output layer, as rank keys;
    the head's last tile to finish merges them all (``_merge_tiles``).
    A matrix-vector product in float32, summed across K once at the end: a tl.dot would pad the
    single feature row to 16, and every top-k pass would then scan 16 rows of keys instead of one."""
    head = tl.program_id(0)
    tile = tl.program_id(1)
    cols = tile * BN + tl.arange(0, BN)
    col_ok = cols < N
    w_base = w_ptr + head * N * K
    partial = tl.zeros((BN, BK), tl.float32)
    for k0 in range(0, K, BK):
        ks = k0 + tl.arange(0, BK)
        k_ok = ks < K
        f = tl.load(feat_ptr + head * K + ks, mask=k_ok, other=0.0).to(tl.float32)
        w = tl.load(w_base + cols[:, None] * K + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0)
        partial += w.to(tl.float32) * f[None, :]
    acc = tl.sum(partial, axis=1)
    scale = tl.load(scale_ptr + head * N + cols, mask=col_ok, other=0.0)
    keys = _rank_key(tl.where(col_ok, acc * scale, float("-inf")), cols)
    base = (head * tl.num_programs(1) + tile) * TOPK
    for rank in tl.static_range(TOPK):
        best = tl.max(keys, axis=0)
        tl.store(key_ptr + base + rank, best)
        keys = tl.where(keys == best, -(2**63) + 1, keys)
    if _last_to_finish(done_ptr + head):
        _merge_tiles(key_ptr, head, tl.num_programs(1) * TOPK, root_ptr, node_head_ptr, node_rank_ptr, tokens_ptr,
                     cand_ptr, TOPK, TOPK_PAD, COUNT_PAD, NODES, NODES_PAD, HAS_TOKENS)


@triton.jit
def _last_to_finish(counter_ptr):
    """Whether this program is the last of the ``tl.num_programs(1)`` that share ``counter_ptr``
    to get here; that one also resets the counter for the next launch. The barrier and the
    acquire-release add make every program's earlier stores visible to the last one."""
    tl.debug_barrier()
    last = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu") == tl.num_programs(1) - 1
    if last:
        tl.store(counter_ptr, 0)
    return last


@triton.jit
def _merge_tiles(key_ptr, head, COUNT, root_ptr, node_head_ptr, node_rank_ptr, tokens_ptr, cand_ptr,
                 TOPK: tl.constexpr, TOPK_PAD: tl.constexpr, COUNT_PAD: tl.constexpr, NODES: tl.constexpr,
                 NODES_PAD: tl.constexpr, HAS_TOKENS: tl.constexpr):
    """Head h's overall top-k from its tiles' top-k, written into the tree nodes that take them
    (as the token ids of those output rows when the rows are a draft vocabulary). The tiles'
    keys are taken COUNT_PAD at a time, each chunk's k best merged with the k best so far (as one
    block, a whole vocabulary's thousands of tiles would make the merge the slowest part of a step). The k best
    keys are selected first and their token ids looked up together afterwards: a lookup inside
    the selection loop puts one memory round trip per rank on the step's critical path. Keys
    are read past the SM's own cache, which may hold an earlier step's."""
    none = -(2**63) + 1
    entries = tl.arange(0, COUNT_PAD)
    ranks = tl.arange(0, TOPK_PAD)
    chosen = tl.full((TOPK_PAD,), none, tl.int64)
    for start in range(0, COUNT, COUNT_PAD):
        keys = tl.load(key_ptr + head * COUNT + start + entries, mask=start + entries < COUNT, other=none,
                       cache_modifier=".cg")
        kept = chosen
        for rank in tl.static_range(TOPK):
            best = tl.maximum(tl.max(keys, axis=0), tl.max(kept, axis=0))
            keys = tl.where(keys == best, none, keys)
            kept = tl.where(kept == best, none, kept)
            chosen = tl.where(ranks == rank, best, chosen)
    nodes = tl.arange(0, NODES_PAD)
    node_ok = nodes < NODES
    node_head = tl.load(node_head_ptr + nodes, mask=node_ok, other=-1)
    node_rank = tl.load(node_rank_ptr + nodes, mask=node_ok, other=-1)
    tokens = 0x7FFFFFFF - (chosen & 0xFFFFFFFF)
    if HAS_TOKENS:
        tokens = tl.load(tokens_ptr + tokens, mask=ranks < TOPK, other=0).to(tl.int64)
    token = tl.sum(tl.where(node_rank[:, None] == ranks[None, :], tokens[None, :], 0), axis=1)
    tl.store(cand_ptr + 1 + nodes, token, mask=node_head == head)
    if head == 0:
        tl.store(cand_ptr, tl.load(root_ptr))


# Output rows one proposal program ranks. Each program is a serial chain (its K loop, then its
# top-k), so fewer rows per program give more, shorter programs, down to where each program's
# fixed top-k and merge work dominates (`step_cost.py --head-tile-rows` measures the trade;
# docs/runtime.md has the figures).
HEAD_TILE_ROWS = 128
# Tiles' top-k keys a merge takes at a time. A whole 128K-token vocabulary gives a head 1,002
# tiles, 10,020 keys for a 63-node tree's top-10: taken as one padded block they overflow one
# program's registers and the merge becomes the slowest part of a step (docs/runtime.md); in
# chunks the block stays small, and a draft vocabulary's few hundred keys fit one chunk.
MERGE_CHUNK = 2048


@dataclass(frozen=True)
class HeadOutputs:
    """The heads' output layers, or the shared lm_head, as int8 with a float32 scale per row.

    They only rank the tokens a tree proposes, which the base model then verifies, so their
    precision never changes what decoding emits; int8 halves the bytes a step reads. With a
    draft vocabulary only its tokens' rows are kept, ``tokens`` naming them (ascending ids)."""

    weight: torch.Tensor  # [heads, rows, K] (per_head) or [rows, K]
    scale: torch.Tensor  # [heads, rows] or [rows]
    per_head: bool
    tokens: torch.Tensor | None = None  # [rows] int32 token ids; None: row i is token i

    @classmethod
    def quantize(cls, weight: torch.Tensor, per_head: bool, tokens: torch.Tensor | None = None) -> "HeadOutputs":
        # One output layer at a time keeps the float32 working copy to a single layer's size.
        layers = weight if per_head else weight.unsqueeze(0)
        if tokens is not None:
            tokens = tokens.to(device=weight.device, dtype=torch.int32)
            layers = [layer.index_select(0, tokens) for layer in layers]
        parts = [_quantize_rows(layer) for layer in layers]
        quantized, scale = (torch.stack(t) if per_head else t[0] for t in zip(*parts))
        return cls(quantized.contiguous(), scale.contiguous(), per_head, tokens)


def _quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per row."""
    scale = weight.float().abs().amax(dim=-1).clamp(min=1e-12) / 127
    return (weight.float() / scale.unsqueeze(-1)).round().clamp(-127, 127).to(torch.int8), scale


def tree_candidates(features: torch.Tensor, outputs: HeadOutputs, topk: int, root: torch.Tensor,
                    node_head: torch.Tensor, node_rank: torch.Tensor, out: torch.Tensor, *, bf16: bool,
                    tile_rows: int = HEAD_TILE_ROWS, tiles_done: torch.Tensor | None = None) -> None:
    """A tree step's tokens ``out`` [nodes + 1]: the root, then for node i the token of rank
    ``node_rank[i]`` among head ``node_head[i]``'s logits ``features[h] @ W_h.T``. One launch:
    each tile of ``tile_rows`` output rows keeps its top-k, and a head's last tile to finish
    merges its tiles'. ``tiles_done`` counts finished tiles: int32 zeros, at least one per head,
    that each launch leaves zeroed (default: fresh ones; a graphed step keeps its own).
    ``bf16`` multiplies a shared lm_head in bfloat16 (heads' own output layers: float32)."""
    heads, k = features.shape
    vocab = outputs.weight.shape[-2]
    block_n = tile_rows
    tiles = triton.cdiv(vocab, block_n)
    keys = torch.empty(heads, tiles, topk, dtype=torch.int64, device=features.device)
    if tiles_done is None:
        tiles_done = torch.zeros(heads, dtype=torch.int32, device=features.device)
    elif tiles_done.dtype != torch.int32 or tiles_done.numel() < heads or tiles_done.device != features.device:
        raise ValueError(f"tiles_done must be int32 zeros on {features.device}, at least {heads} of them (one per "
                         f"head); got {tiles_done.numel()} {tiles_done.dtype} on {tiles_done.device}")
    nodes = node_head.shape[0]
    tokens = outputs.tokens if outputs.tokens is not None else node_head  # node_head: never read
    merge = (tiles_done, root, node_head, node_rank, tokens, out)
    merge_consts = dict(TOPK=topk, TOPK_PAD=triton.next_power_of_2(topk),
                        COUNT_PAD=min(triton.next_power_of_2(tiles * topk), MERGE_CHUNK), NODES=nodes,
                        NODES_PAD=triton.next_power_of_2(max(nodes, 2)), HAS_TOKENS=outputs.tokens is not None)
    if outputs.per_head:
        _own_head_topk_kernel[(heads, tiles)](features, outputs.weight, outputs.scale, keys, *merge, vocab, K=k,
                                              BN=block_n, BK=64, **merge_consts, num_warps=4)
    else:
        per_program = min(heads, 16)
        _shared_head_topk_kernel[(triton.cdiv(heads, per_program), tiles)](
            features, outputs.weight, outputs.scale, keys, *merge, heads, vocab, K=k, PER_PROGRAM=per_program,
            BN=block_n, BK=64, BF16=bf16, **merge_consts, num_warps=4,
        )


@triton.jit
def _accept_kernel(cand_ptr, pred_ptr, paths_ptr, valid_ptr, n_ptr, out_ptr, root_ptr, last_ptr, moves_ptr,
                   LEAVES: tl.constexpr, LEAVES_PAD: tl.constexpr, LEVELS: tl.constexpr, LEVELS_PAD: tl.constexpr):
    leaves = tl.arange(0, LEAVES_PAD)
    levels = tl.arange(0, LEVELS_PAD)
    level_ok = levels < LEVELS
    ok = (leaves < LEAVES)[:, None] & level_ok[None, :]
    offsets = leaves[:, None] * LEVELS + levels[None, :]
    nodes = tl.load(paths_ptr + offsets, mask=ok, other=0)
    parents = tl.load(paths_ptr + offsets - 1, mask=ok & (levels[None, :] > 0), other=0)
    valid = tl.load(valid_ptr + offsets, mask=ok, other=0) != 0
    n = tl.load(n_ptr)
    # Every value the step needs is loaded in this one round trip; the winning path's entries
    # are then picked out of these tiles rather than loaded again.
    tokens_at = tl.load(cand_ptr + nodes, mask=ok, other=-1)
    after_parent = tl.load(pred_ptr + parents, mask=ok, other=-1)
    after_node = tl.load(pred_ptr + nodes, mask=ok, other=0)
    # A node is accepted when its token is the base model's prediction after its parent.
    hit = valid & (tokens_at == after_parent)
    first_miss = tl.min(tl.where(hit | (levels[None, :] == 0), LEVELS_PAD, levels[None, :]), axis=1)
    accepted = tl.where(leaves < LEAVES, tl.minimum(first_miss, LEVELS) - 1, -1)
    best = tl.argmax(accepted, axis=0)
    length = tl.max(accepted, axis=0)
    on_best = (leaves == best)[:, None]
    path = tl.sum(tl.where(on_best, nodes, 0), axis=0)
    tokens = tl.sum(tl.where(on_best, tokens_at, 0), axis=0)
    at_last = levels == length
    last = tl.sum(tl.where(at_last, path, 0), axis=0)
    root = tl.sum(tl.where(at_last, tl.sum(tl.where(on_best, after_node, 0), axis=0), 0), axis=0)
    tl.store(out_ptr, length.to(tl.int64))
    tl.store(out_ptr + 1 + levels, tokens, mask=level_ok)
    tl.store(root_ptr, root)
    tl.store(last_ptr, last.to(tl.int64))
    tl.store(moves_ptr + levels, n + path, mask=level_ok)
    tl.store(moves_ptr + LEVELS + levels, n + levels, mask=level_ok)
    tl.store(n_ptr, n + length + 1)


@triton.jit
def _move_kv(k_ptr, v_ptr, moves_ptr, base, LEVELS: tl.constexpr, LEVELS_PAD: tl.constexpr, D: tl.constexpr):
    """One layer's and kv head's cache moves (``base`` points at them): slot ``moves[i]`` to
    ``moves[LEVELS + i]``."""
    levels = tl.arange(0, LEVELS_PAD)
    ok = (levels < LEVELS)[:, None]
    dims = tl.arange(0, D)
    src = base + tl.load(moves_ptr + levels, mask=levels < LEVELS, other=0)[:, None] * D + dims[None, :]
    dst = base + tl.load(moves_ptr + LEVELS + levels, mask=levels < LEVELS, other=0)[:, None] * D + dims[None, :]
    # A level's destination n+i can be another level's source (path nodes only grow), so every
    # element is read before any is written: all loads, a barrier, then all stores.
    keys = tl.load(k_ptr + src, mask=ok)
    values = tl.load(v_ptr + src, mask=ok)
    tl.debug_barrier()
    tl.store(k_ptr + dst, keys, mask=ok)
    tl.store(v_ptr + dst, values, mask=ok)


@dataclass(frozen=True)
class CacheMoves:
    """A tree step's KV compaction as ``accept`` decided it: in every layer and kv head, slot
    ``moves[i]`` goes to slot ``moves[levels + i]``."""

    k: torch.Tensor  # [layers, 1, kv_heads, slots, D]
    v: torch.Tensor
    moves: torch.Tensor  # [2 * levels] int64
    levels: int


def _move_args(moves: CacheMoves | None, placeholder: torch.Tensor) -> tuple[tuple, dict]:
    """A launch's arguments for carrying out ``moves`` (None: none; ``placeholder`` fills the
    unread pointers); the last positional one is the number of (layer, kv head) pairs."""
    if moves is None:
        return (placeholder, placeholder, placeholder, 0, 0, 0), dict(MOVES=False, KV_HEADS=1, LEVELS=1,
                                                                        LEVELS_PAD=1, D=16)
    layers, _, kv_heads, _, head_dim = moves.k.shape
    return ((moves.k, moves.v, moves.moves, moves.k.stride(0), moves.k.stride(2), layers * kv_heads),
            dict(MOVES=True, KV_HEADS=kv_heads, LEVELS=moves.levels, LEVELS_PAD=triton.next_power_of_2(moves.levels),
                 D=head_dim))


def accept(candidates: torch.Tensor, predictions: torch.Tensor, paths: torch.Tensor, path_valid: torch.Tensor,
           n: torch.Tensor, out: torch.Tensor, root: torch.Tensor, last: torch.Tensor, k_cache: torch.Tensor,
           v_cache: torch.Tensor) -> CacheMoves | None:
    """Greedy acceptance of one tree step, in place, in one launch.

    The longest path of ``paths`` [leaves, depth+1] (first such leaf on ties) whose every token
    equals the prediction after its parent wins: ``out`` gets its length and tokens, ``root`` the
    prediction after its last token, ``last`` that node's index, ``n`` grows by length + 1.
    Returns the moves that bring the path's keys and values to cache slots ``n, n+1, ...`` in
    every layer (``*_cache``: [layers, 1, kv_heads, slots, D]) for ``head_features`` to carry
    out, saving a launch; None for a one-token step. ``path_valid`` is int8.
    """
    leaves, levels = paths.shape
    moves = torch.empty(2 * levels, dtype=torch.long, device=paths.device)
    # Two warps: the tile is a few leaves by a few levels, so more warps only add synchronisation;
    # two measured fastest (docs/runtime.md has the timings).
    _accept_kernel[(1,)](candidates, predictions, paths, path_valid, n, out, root, last, moves,
                         LEAVES=leaves, LEAVES_PAD=triton.next_power_of_2(leaves), LEVELS=levels,
                         LEVELS_PAD=triton.next_power_of_2(levels), num_warps=2)
    return CacheMoves(k_cache, v_cache, moves, levels) if levels > 1 else None
