"""In-memory artifact store: the fake beside the real backend (STYLE habit 2)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from maas.storage.base import ArtifactStore, register_backend


class InMemoryArtifactStore(ArtifactStore):
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._modified_at: dict[str, float] = {}

    def _write(self, digest: str, data: bytes) -> None:
        self._blobs[digest] = bytes(data)
        self._modified_at[digest] = time.time()

    def _touch(self, digest: str) -> bool:
        if digest not in self._blobs:
            return False
        self._modified_at[digest] = time.time()
        return True

    def _modified(self, digest: str) -> float | None:
        return self._modified_at.get(digest) if digest in self._blobs else None

    def _list(self) -> Iterator[str]:
        return iter(list(self._blobs))

    def _read(self, digest: str) -> bytes | None:
        return self._blobs.get(digest)

    def _exists(self, digest: str) -> bool:
        return digest in self._blobs

    def _delete(self, digest: str) -> None:
        self._blobs.pop(digest, None)
        self._modified_at.pop(digest, None)


register_backend("memory", lambda _url: InMemoryArtifactStore())
