"""The hand-off between the engine thread and a request's coroutine: deltas per choice, in order.

The engine appends deltas under a lock and schedules at most one wake-up of the event loop per decode
step; the coroutine drains them. ``cancel`` (the client went away) is read by the engine at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from maas.serving.generation.params import SamplingParams


@dataclass(frozen=True)
class ChoiceDelta:
    choice: int
    text: str
    finish_reason: str | None  # "stop" | "length" once the choice is over
    completion_tokens: int  # tokens this choice has generated so far
    token_id: int  # the token this step generated (its text may come later, or never for EOS)


class GenerationStream:
    def __init__(self, loop: asyncio.AbstractEventLoop, prompt_ids: list[int], params: SamplingParams) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.submitted_at = time.perf_counter()
        self.first_token_at: float | None = None
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[ChoiceDelta] = []
        self._error: BaseException | None = None
        self._wakeup = asyncio.Event()
        self._cancelled = False

    # --- engine side ---------------------------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def mark_first_token(self, at: float) -> None:
        self.first_token_at = at

    def push(self, delta: ChoiceDelta) -> None:
        with self._lock:
            self._pending.append(delta)

    def publish(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is listening any more
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self._error = error
        self.publish()

    # --- request side ----------------------------------------------------------------------------------------

    def cancel(self) -> None:
        self._cancelled = True

    async def deltas(self) -> AsyncIterator[ChoiceDelta]:
        """Every choice's deltas until each has finished; raises the engine's error if the request failed.

        Leaving the loop early (the client hung up, the task was cancelled) cancels the generation."""
        unfinished = set(range(self.params.n))
        try:
            while unfinished:
                await self._wakeup.wait()
                self._wakeup.clear()
                with self._lock:
                    pending, self._pending = self._pending, []
                    error = self._error
                for delta in pending:
                    if delta.finish_reason is not None:
                        unfinished.discard(delta.choice)
                    yield delta
                if error is not None and unfinished:
                    raise error
        finally:
            if unfinished:
                self.cancel()
