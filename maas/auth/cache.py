"""A short-TTL cache of resolved keys: no database round trip per prediction (DESIGN decision 8).

Revocation through this process invalidates at once; a revocation made by another API instance is
seen within the TTL, which the settings keep well under the promised 5 seconds. Unknown keys are cached
too (as None), so a flood of bad keys does not become a flood of queries.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from maas.auth.roles import Principal
from maas.auth.secrets import hash_secret

_MAX_ENTRIES = 100_000


class KeyCache:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._generation = 0

    def peek(self, secret: str) -> tuple[Principal | None] | None:
        """``(principal,)`` on a fresh hit (principal None = known bad key), None on a miss."""
        hit = self._entries.get(hash_secret(secret))
        if hit is None or hit[0] <= self._clock():
            return None
        return (hit[1],)

    @property
    def generation(self) -> int:
        """Bumped by every revocation: a lookup that started before one must not cache its answer."""
        return self._generation

    def store(self, secret: str, principal: Principal | None, generation: int) -> None:
        if generation != self._generation:
            return
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()  # bounded memory whatever callers send
        self._entries[hash_secret(secret)] = (self._clock() + self._ttl, principal)

    def invalidate_key(self, key_id: str) -> None:
        self._generation += 1
        for digest, (_, principal) in list(self._entries.items()):
            if principal is not None and principal.key_id == key_id:
                del self._entries[digest]
