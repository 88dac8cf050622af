"""Projection weights laid out block by block for the decoding kernels.

A ``[N, K]`` weight stored row by row hands a kernel program, at each K step, a short piece of
each of its ``block_n`` rows: 128 to 256 bytes from each of 64-256 rows thousands of bytes apart.
A ``PackedWeight`` holds the same values as one contiguous ``[block_n, block_k]`` block per
(column tile, K block), the blocks of a column tile in K order and the column tiles one after
another, so the blocks a program reads in turn (a K span of one column tile, or a run across
several) lie in one stretch of memory. A gated projection's gate and up blocks of the same
columns and K block sit side by side. Edges are padded with zeros. The layout changes where the
kernel loads values from, never which values it multiplies or in what order, so a packed weight
gives the same bits as the row-major one.

Torch only: the torch forward pass takes ``dense(weight)`` of either kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PackedWeight:
    """A projection weight ``[rows, k]`` (``rows`` = 2N for gated gate and up) in blocks:
    ``data`` is ``[column tiles, K blocks, parts, block_n, block_k]``, parts 2 for gated, else 1."""

    data: torch.Tensor
    rows: int
    k: int

    @classmethod
    def pack(cls, weight: torch.Tensor, block_n: int, block_k: int, gated: bool) -> "PackedWeight":
        rows, k = weight.shape
        parts = 2 if gated else 1
        if rows % parts:
            raise ValueError(f"a gated weight stacks gate and up: {rows} rows do not halve")
        n = rows // parts
        tiles, blocks = -(-n // block_n), -(-k // block_k)
        padded = weight.new_zeros(parts, tiles * block_n, blocks * block_k)
        padded[:, :n, :k] = weight.view(parts, n, k)
        data = padded.view(parts, tiles, block_n, blocks, block_k).permute(1, 3, 0, 2, 4).contiguous()
        return cls(data, rows, k)

    @property
    def block_n(self) -> int:
        return self.data.shape[3]

    @property
    def block_k(self) -> int:
        return self.data.shape[4]

    @property
    def gated(self) -> bool:
        return self.data.shape[2] == 2

    @property
    def shape(self) -> torch.Size:
        """The row-major weight's shape."""
        return torch.Size((self.rows, self.k))

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    def numel(self) -> int:
        """Values of the row-major weight (its padding left out)."""
        return self.rows * self.k

    def element_size(self) -> int:
        return self.data.element_size()

    def unpacked(self) -> torch.Tensor:
        """The row-major ``[rows, k]`` weight, a new tensor."""
        tiles, blocks, parts, block_n, block_k = self.data.shape
        full = self.data.permute(2, 0, 3, 1, 4).reshape(parts, tiles * block_n, blocks * block_k)
        return full[:, : self.rows // parts, : self.k].reshape(self.rows, self.k)


def dense(weight: torch.Tensor | PackedWeight) -> torch.Tensor:
    """The row-major weight, packed or not."""
    return weight.unpacked() if isinstance(weight, PackedWeight) else weight
