"""What one generation request asks for, and the bounds the service enforces before any allocation."""

from __future__ import annotations

from dataclasses import dataclass, field

# OpenAI allows up to 128 choices; on a CPU server eight already fill a batch.
MAX_CHOICES = 8
MAX_STOP_STRINGS = 4  # as OpenAI
# Without max_tokens a reply may use the whole context; we cap the default so a forgotten limit does not
# hold a batch slot for minutes. An explicit max_tokens up to the context is honoured.
DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    n: int = 1

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalised(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
