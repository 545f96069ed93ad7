"""The running batch's KV cache: one left-padded tensor per layer, rows joining and leaving between steps.

Sequences of different lengths share one forward pass: each row is left-padded to the longest, an
attention mask hides the padding and position ids count only real tokens. A new sequence is prefilled
alone (exactly what ``generate`` computes for one prompt) and its cache is then padded into the batch;
a finished row is dropped and padding columns that no row needs any more are trimmed away.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


def mergeable(cache: Any) -> bool:
    """Only plain full-attention layers can be padded and stacked (sliding windows cannot)."""
    return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _left_pad(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class BatchCache:
    def __init__(self) -> None:
        self.cache: Any = None  # the model's DynamicCache, shared by every row
        self.mask = torch.zeros((0, 0), dtype=torch.long)  # (rows, columns): 1 where a real token is
        self.positions = torch.zeros(0, dtype=torch.long)  # each row's next position id

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    def add(self, cache: Any, length: int, copies: int) -> None:
        """Append ``copies`` rows that all continue one freshly prefilled prompt of ``length`` tokens."""
        if copies > 1:
            for layer in cache.layers:
                layer.keys = layer.keys.repeat_interleave(copies, dim=0)
                layer.values = layer.values.repeat_interleave(copies, dim=0)
        mask = torch.ones((copies, length), dtype=torch.long)
        positions = torch.full((copies,), length, dtype=torch.long)
        if self.cache is None or self.rows == 0:
            self.cache, self.mask, self.positions = cache, mask, positions
            return
        width = max(length, int(self.mask.shape[1]))
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            pad_mine, pad_theirs = width - mine.keys.shape[-2], width - theirs.keys.shape[-2]
            mine.keys = torch.cat([_left_pad(mine.keys, pad_mine, 2), _left_pad(theirs.keys, pad_theirs, 2)])
            mine.values = torch.cat([_left_pad(mine.values, pad_mine, 2), _left_pad(theirs.values, pad_theirs, 2)])
        self.mask = torch.cat([_left_pad(self.mask, width - self.mask.shape[1], 1), _left_pad(mask, width - length, 1)])
        self.positions = torch.cat([self.positions, positions])

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention mask and position ids for one more token per row; advances the bookkeeping."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=1)
        position_ids = self.positions.unsqueeze(1)
        self.positions = self.positions + 1
        return self.mask, position_ids

    def keep(self, rows: list[int]) -> None:
        """Drop every row not listed, then the padding columns no remaining row uses."""
        if len(rows) == self.rows:
            return
        if not rows:
            self.cache, self.mask, self.positions = None, self.mask[:0, :0], self.positions[:0]
            return
        index = torch.tensor(rows, dtype=torch.long)
        self.mask, self.positions = self.mask[index], self.positions[index]
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, first:, :]
            layer.values = layer.values[index, :, first:, :]
        self.mask = self.mask[:, first:]
