"""Concurrent callers asking for the same key share one computation instead of each running it.

On the predict path a cache entry (a key, an endpoint route, a loaded model) expires for every
concurrent request at the same moment; without this, 32 requests in flight would send 32 identical
database queries, and open as many connections, exactly when the TTL runs out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

ResultT = TypeVar("ResultT")


class SingleFlight(Generic[ResultT]):
    """One in-flight ``compute()`` per key; callers that arrive meanwhile await its result (or error).

    The computation runs as its own task, so a caller that is cancelled (its client went away) cancels
    neither the computation nor the other callers waiting for it. Use from one event loop.
    """

    def __init__(self) -> None:
        self._pending: dict[Hashable, asyncio.Task[ResultT]] = {}

    async def run(self, key: Hashable, compute: Callable[[], Coroutine[Any, Any, ResultT]]) -> ResultT:
        task = self._pending.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(compute())
            self._pending[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    def _forget(self, key: Hashable, done: asyncio.Task[ResultT]) -> None:
        self._pending.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: an error every caller walked away from is not logged as lost

    def in_flight(self) -> int:
        return len(self._pending)
