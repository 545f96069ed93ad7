"""A queue shared fairly between keys (tenants): whoever was served least goes next.

Start-time fair queuing, reduced to what a server with a handful of active tenants needs. Each key has a
virtual clock that advances by the cost of every item taken from it (rows of an embedding slice, one render
of a chat template). :meth:`FairQueue.pop` takes the oldest item of the key whose clock is lowest; a key that
becomes active again starts at the clock of the item taken last, so it cannot bank credit while idle, and
it goes ahead of a key that was just served. The effect:

- a key that queues a hundred items does not hold back another key's one item: that item is taken next
  (after the item already in progress), whatever the backlog;
- two keys that both have a backlog alternate, by cost: a key sending 1-row items gets ~32 of them through
  for each 32-row item of another;
- items of one key stay in their order (FIFO).

With a single key (``None`` everywhere) it is a plain FIFO queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[tuple[T, int]]] = {}  # active keys, in the order they arrived
        self._clocks: dict[Hashable, int] = {}
        self._now = 0  # the virtual start of the item taken last
        self._size = 0
        self._cost = 0

    def __len__(self) -> int:
        return self._size

    @property
    def cost(self) -> int:
        """The total cost of the queued items."""
        return self._cost

    def push(self, key: Hashable, item: T, cost: int = 1) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._clocks[key] = max(self._clocks.get(key, 0), self._now)
        queue.append((item, cost))
        self._size += 1
        self._cost += cost

    def _next_key(self) -> Hashable:
        if not self._queues:
            raise IndexError("the queue is empty")
        # Ties (equal clocks) go to the key that became active first: dicts keep insertion order.
        return min(self._queues, key=self._clocks.__getitem__)

    def peek(self) -> tuple[T, int]:
        """The item :meth:`pop` would take, with its cost."""
        return self._queues[self._next_key()][0]

    def pop(self) -> T:
        return self._take(charge=True)

    def discard(self) -> T:
        """Take the item :meth:`pop` would take without charging its key: its caller went away, nothing ran."""
        return self._take(charge=False)

    def _take(self, *, charge: bool) -> T:
        key = self._next_key()
        queue = self._queues[key]
        item, cost = queue.popleft()
        self._size -= 1
        self._cost -= cost
        if charge:
            self._now = self._clocks[key]
            self._clocks[key] += cost
        if not queue:
            del self._queues[key]
            self._forget_idle()
        return item

    def _forget_idle(self) -> None:
        if not self._queues:
            # Everyone is served: nobody carries credit or debt into the next busy period.
            self._clocks.clear()
            self._now = 0
            return
        # An idle key whose clock is behind the current time would restart at the current time anyway: its
        # clock carries nothing, so it is dropped (the table does not grow with every tenant ever seen).
        for key in [key for key, clock in self._clocks.items() if key not in self._queues and clock <= self._now]:
            del self._clocks[key]

    def remove_if(self, condition: Callable[[T], bool]) -> None:
        """Drop every queued item for which ``condition`` holds (callers that went away)."""
        for key in list(self._queues):
            queue = self._queues[key]
            kept = deque(entry for entry in queue if not condition(entry[0]))
            self._size -= len(queue) - len(kept)
            self._cost -= sum(cost for _, cost in queue) - sum(cost for _, cost in kept)
            if kept:
                self._queues[key] = kept
            else:
                del self._queues[key]
        self._forget_idle()
