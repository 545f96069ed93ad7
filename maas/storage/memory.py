"""In-memory artifact store: the fake beside the real backend (STYLE habit 2)."""

from __future__ import annotations

from maas.storage.base import ArtifactStore, register_backend


class InMemoryArtifactStore(ArtifactStore):
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def _write(self, digest: str, data: bytes) -> None:
        self._blobs[digest] = bytes(data)

    def _read(self, digest: str) -> bytes | None:
        return self._blobs.get(digest)

    def _exists(self, digest: str) -> bool:
        return digest in self._blobs

    def _delete(self, digest: str) -> None:
        self._blobs.pop(digest, None)


register_backend("memory", lambda _url: InMemoryArtifactStore())
