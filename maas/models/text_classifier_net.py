"""The torch networks of ``text-classifier``; imported only by training code.

Every encoder reads int64 token ids ``[batch, length]`` padded at the end with :data:`PAD_ID` and returns
one logit per class. Padding never changes a text's result: pooling is masked, the backward direction of
a bidirectional RNN runs over each text reversed *within its own length* (so it starts at the last real
token, not at padding), attention masks padded keys, and the bag of n-grams averages only real n-grams.
So a text scores the same alone or in a batch, at any padded length.

The module depends on torch only (no pydantic): :class:`TextNetConfig` is built by the trainer from the
family's hyperparameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

PAD_ID = 0
# Slots of the in-graph bigram lookup table (a prime, so the pair code spreads evenly). A bigram's slot holds
# 0 (not a kept bigram: ignored) or its 1-based index among the kept bigrams.
BIGRAM_SLOTS = 1_048_573

EncoderName = Literal["gru", "lstm", "transformer", "bag"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TextNetConfig:
    vocab_size: int
    n_outputs: int
    max_length: int
    encoder: EncoderName = "gru"
    embedding_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.5
    token_dropout: float = 0.0  # training only: share of tokens hidden from the model (word dropout)
    heads: int = 4  # transformer only
    bigrams: int = 0  # > 0: a bag of (at most this many) frequent bigrams joins the pooled features
    bag: bool = False  # a bag of unigrams (and the bigrams) beside the encoder; always on for "bag"
    bag_dim: int = 0  # width of the bag's vectors; 0 = embedding_dim
    members: int = 1  # > 1: an ensemble of this many networks (see TextEnsemble)
    seed: int = 0


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real positions; ``values`` ``[B, L, D]``, ``mask`` ``[B, L]`` (bool)."""
    weights = mask.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over the real positions (0 for a text with none)."""
    filled = values.masked_fill(~mask.unsqueeze(-1), -1e4)
    best = filled.max(dim=1).values
    return torch.where(mask.any(dim=1, keepdim=True), best, torch.zeros_like(best))


def reverse_within_length(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``lengths[b]`` positions, leaving the padding where it is.

    Applied twice it is the identity, so it maps backward-RNN outputs back to token order."""
    length = values.shape[1]
    positions = torch.arange(length, device=values.device).unsqueeze(0)  # [1, L]
    last = lengths.unsqueeze(1) - 1  # [B, 1]
    index = torch.where(positions <= last, last - positions, positions)  # [B, L]
    if values.dim() == 3:
        index = index.unsqueeze(-1).expand(-1, -1, values.shape[2])
    return torch.gather(values, 1, index)


class RecurrentEncoder(nn.Module):
    """Stacked GRU/LSTM layers; a bidirectional layer is two one-way RNNs, the second over reversed text."""

    def __init__(self, kind: Literal["gru", "lstm"], input_size: int, config: TextNetConfig) -> None:
        super().__init__()
        rnn = nn.GRU if kind == "gru" else nn.LSTM
        self.bidirectional = config.bidirectional
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        self.dropout = nn.Dropout(config.dropout)
        width = input_size
        for _ in range(config.num_layers):
            self.forward_layers.append(rnn(width, config.hidden_size, batch_first=True))
            if self.bidirectional:
                self.backward_layers.append(rnn(width, config.hidden_size, batch_first=True))
            width = config.hidden_size * (2 if self.bidirectional else 1)
        self.output_size = width

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(dim=1)
        hidden = embedded
        for index, layer in enumerate(self.forward_layers):
            if index:
                hidden = self.dropout(hidden)
            forward_out, _ = layer(hidden)
            if self.bidirectional:
                backward_out, _ = self.backward_layers[index](reverse_within_length(hidden, lengths))
                forward_out = torch.cat([forward_out, reverse_within_length(backward_out, lengths)], dim=2)
            hidden = forward_out
        return hidden


class _AttentionLayer(nn.Module):
    """Pre-norm transformer encoder layer with an explicit additive key mask (exports to plain ONNX ops)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.project = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        head_width = width // self.heads
        q, k, v = self.qkv(self.norm1(hidden)).chunk(3, dim=2)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, length, self.heads, head_width).transpose(1, 2)

        scores = split(q) @ split(k).transpose(2, 3) / math.sqrt(head_width) + key_bias
        attended = (torch.softmax(scores, dim=-1) @ split(v)).transpose(1, 2).reshape(batch, length, width)
        hidden = hidden + self.dropout(self.project(attended))
        out: torch.Tensor = hidden + self.dropout(self.feed_forward(self.norm2(hidden)))
        return out


class TransformerEncoder(nn.Module):
    def __init__(self, input_size: int, config: TextNetConfig) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, config.max_length, input_size))
        nn.init.normal_(self.position, std=0.02)
        self.layers = nn.ModuleList(
            _AttentionLayer(input_size, config.heads, config.dropout) for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(input_size)
        self.output_size = input_size

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = embedded + self.position[:, : embedded.shape[1]]
        key_bias = ((~mask).to(hidden.dtype) * -1e4)[:, None, None, :]  # [B, 1, 1, L]
        for layer in self.layers:
            hidden = layer(hidden, key_bias)
        out: torch.Tensor = self.norm(hidden)
        return out


class TextClassifierNet(nn.Module):
    """Embedding → encoder → masked max+mean pooling (plus an optional bag of hashed bigrams) → linear."""

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.embedding: nn.Embedding | None = None
        self.encoder: nn.Module | None = None
        width = 0
        if config.encoder != "bag":
            self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        if config.encoder in ("gru", "lstm"):
            recurrent = RecurrentEncoder(config.encoder, config.embedding_dim, config)
            self.encoder, width = recurrent, 2 * recurrent.output_size
        elif config.encoder == "transformer":
            if config.embedding_dim % config.heads:
                raise ValueError("embedding_dim must be a multiple of heads")
            transformer = TransformerEncoder(config.embedding_dim, config)
            self.encoder, width = transformer, 2 * transformer.output_size
        self.bag: nn.Embedding | None = None
        if config.encoder == "bag" or config.bag or config.bigrams > 0:
            # Unigram ids share the table with the kept bigrams, placed after the vocabulary.
            bag_dim = config.bag_dim or config.embedding_dim
            self.bag = nn.Embedding(config.vocab_size + config.bigrams, bag_dim)
            nn.init.uniform_(self.bag.weight, -0.05, 0.05)
            width += bag_dim
        self.bigram_slots: torch.Tensor
        self.register_buffer("bigram_slots", torch.zeros(BIGRAM_SLOTS if config.bigrams else 1, dtype=torch.int64))
        self.head_dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(width, config.n_outputs)

    def _bag_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert self.bag is not None
        grams = ids
        gram_mask = mask
        if self.config.bigrams > 0:
            found = self.bigram_slots[bigram_slot(ids[:, :-1], ids[:, 1:], self.config.vocab_size)]
            grams = torch.cat([ids, torch.clamp(found - 1, min=0) + self.config.vocab_size], dim=1)
            gram_mask = torch.cat([mask, mask[:, :-1] & mask[:, 1:] & (found > 0)], dim=1)
        return _masked_mean(self.bag(grams), gram_mask)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != PAD_ID
        kept = mask
        if self.training and self.config.token_dropout > 0:
            # Word dropout: the bag forgets the token, the encoder sees a zero vector in its place.
            kept = mask & (torch.rand(ids.shape, device=ids.device) >= self.config.token_dropout)
        features: list[torch.Tensor] = []
        if self.encoder is not None and self.embedding is not None:
            embedded = self.embedding(ids)
            if kept is not mask:
                embedded = embedded * kept.unsqueeze(-1).to(embedded.dtype)
            encoded = self.encoder(self.embedding_dropout(embedded), mask)
            features += [_masked_max(encoded, mask), _masked_mean(encoded, mask)]
        if self.bag is not None:
            features.append(self._bag_features(ids, kept))
        pooled = features[0] if len(features) == 1 else torch.cat(features, dim=1)
        out: torch.Tensor = self.head(self.head_dropout(pooled))
        return out


def bigram_slot(first: torch.Tensor, second: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Table slot of the bigram (first, second): its exact pair code modulo the prime table size."""
    return (first * vocab_size + second) % BIGRAM_SLOTS


def frequent_bigrams(ids: torch.Tensor, limit: int, min_count: int = 2) -> list[tuple[int, int]]:
    """The ``limit`` most frequent bigrams of real tokens seen at least ``min_count`` times in ``ids``."""
    first, second = ids[:, :-1].reshape(-1), ids[:, 1:].reshape(-1)
    real = (first != PAD_ID) & (second != PAD_ID)
    width = int(ids.max()) + 1 if ids.numel() else 1
    codes, counts = torch.unique(first[real] * width + second[real], return_counts=True)
    keep = counts >= min_count
    codes, counts = codes[keep], counts[keep]
    order = torch.argsort(counts, descending=True, stable=True)[:limit]
    return [(int(code) // width, int(code) % width) for code in codes[order]]


class TextEnsemble(nn.Module):
    """Networks trained side by side on the same batches, each on its own loss (:func:`member_loss`), and
    served as the mean of their logits: averaging differently initialised members cuts the seed-to-seed
    spread that a few thousand short texts leave (about ±0.01 accuracy per fold on Rotten Tomatoes).

    In training mode the output is ``[batch, members, classes]``; in eval mode ``[batch, classes]``."""

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(TextClassifierNet(config) for _ in range(config.members))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([member(ids) for member in self.members], dim=1)
        return logits if self.training else logits.mean(dim=1)


def member_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> LossFn:
    """``loss`` applied to every member's logits (mean over members) when the output has a member axis."""

    def apply(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.dim() == 3:
            members = outputs.shape[1]
            return loss(outputs.reshape(-1, outputs.shape[2]), targets.repeat_interleave(members))
        return loss(outputs, targets)

    return apply


def set_bigrams(network: nn.Module, bigrams: list[tuple[int, int]]) -> None:
    """Fill the lookup table of the network (of each member of an ensemble): the i-th bigram gets
    embedding row ``vocab_size + i``. On a slot collision the more frequent bigram keeps the slot."""
    networks = [m for m in network.modules() if isinstance(m, TextClassifierNet)]
    config = networks[0].config
    slots = torch.zeros(BIGRAM_SLOTS, dtype=torch.int64)
    if bigrams:
        pairs = torch.tensor(bigrams[: config.bigrams], dtype=torch.int64)
        positions = bigram_slot(pairs[:, 0], pairs[:, 1], config.vocab_size)
        ranks = torch.arange(1, len(pairs) + 1, dtype=torch.int64)
        best = torch.full((BIGRAM_SLOTS,), len(pairs) + 1, dtype=torch.int64)
        best = best.scatter_reduce(0, positions, ranks, reduce="amin")
        slots = torch.where(best <= len(pairs), best, slots)
    for member in networks:
        member.bigram_slots.copy_(slots)  # each member looks bigrams up the same way


def build_network(config: TextNetConfig) -> TextClassifierNet | TextEnsemble:
    """Build with weights drawn from ``config.seed`` (deterministic, global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return TextEnsemble(config) if config.members > 1 else TextClassifierNet(config)
