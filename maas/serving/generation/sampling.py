"""Next-token choice for a batch: greedy rows in one argmax, sampled rows each with their own generator."""

from __future__ import annotations

import secrets

import torch

from maas.serving.generation.params import SamplingParams

_MIN_TEMPERATURE = 1e-6


class TokenSampler:
    """One choice's sampling state: its seeded generator and the tokens it has produced (for penalties)."""

    def __init__(self, params: SamplingParams, choice: int) -> None:
        self.params = params
        self._generator: torch.Generator | None = None
        if not params.greedy:
            # A request's seed makes its choices reproducible; choice i draws from seed + i so n choices differ.
            seed = (params.seed if params.seed is not None else secrets.randbits(63)) + choice
            self._generator = torch.Generator().manual_seed(seed % (1 << 63))
        self._generated: list[int] = []

    def choose(self, logits: torch.Tensor) -> int:
        """``logits`` is this choice's row of the last position's logits (float32, vocab)."""
        params = self.params
        if params.penalised and self._generated:
            logits = self._apply_penalties(logits)
        token = int(torch.argmax(logits)) if params.greedy or self._generator is None else self._sample(logits)
        self._generated.append(token)
        return token

    def record(self, token: int) -> None:
        self._generated.append(token)

    def _apply_penalties(self, logits: torch.Tensor) -> torch.Tensor:
        # OpenAI's definition: logit -= count * frequency_penalty + (count > 0) * presence_penalty
        ids = torch.tensor(self._generated, dtype=torch.long)
        counts = torch.bincount(ids, minlength=logits.shape[-1])[: logits.shape[-1]].to(logits.dtype)
        penalty = counts * self.params.frequency_penalty + (counts > 0).to(logits.dtype) * self.params.presence_penalty
        return logits - penalty

    def _sample(self, logits: torch.Tensor) -> int:
        # Shifted so the best logit is 0 before dividing: a tiny temperature (1e-40, or 5e-324 that float32
        # rounds to 0) would otherwise overflow to inf and softmax to NaN, failing the request (or, in a decode
        # step, every request of the batch). The floor keeps 0/temperature defined; below it sampling is greedy.
        scaled = (logits - logits.max()) / max(self.params.temperature, _MIN_TEMPERATURE)
        top_p = self.params.top_p
        if top_p < 1.0:
            ordered, order = torch.sort(scaled, descending=True)
            probs = torch.softmax(ordered, dim=-1)
            # Keep the smallest set whose mass reaches top_p (always at least the best token).
            drop = torch.cumsum(probs, dim=-1) - probs >= top_p
            ordered = ordered.masked_fill(drop, float("-inf"))
            pick = torch.multinomial(torch.softmax(ordered, dim=-1), 1, generator=self._generator)
            return int(order[pick])
        probs = torch.softmax(scaled, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._generator))


def choose_tokens(logits: torch.Tensor, samplers: list[TokenSampler]) -> list[int]:
    """One token per row of ``logits`` (batch, vocab)."""
    if all(s.params.greedy and not s.params.penalised for s in samplers):
        tokens: list[int] = torch.argmax(logits, dim=-1).tolist()
        for sampler, token in zip(samplers, tokens, strict=True):
            sampler.record(token)
        return tokens
    return [sampler.choose(logits[row]) for row, sampler in enumerate(samplers)]
