"""The artifact store: immutable blobs named by their SHA-256 (DESIGN decision 4).

The public methods validate and orchestrate; a backend implements the primitives (STYLE habit 4).
Backends are picked by URL scheme through a small registry (STYLE habit 3).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

from maas.errors import MaasError, NotFound

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))


def check_digest(digest: str) -> str:
    """Digests come from our DB, but a digest is also a path component: never trust its shape."""
    if not is_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest


class CorruptArtifact(MaasError):
    """A stored blob whose content no longer matches its digest (disk damage or tampering): a server fault."""

    title = "Corrupt artifact"


class ArtifactStore(ABC):
    """Immutable blobs addressed by SHA-256. Writing the same bytes twice stores them once."""

    # A class-level lock, not per instance: several store objects may open the same directory.
    _collection_lock = threading.Lock()

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its digest; the blob is complete before this returns.

        Bytes already stored are not written again, but their blob is touched: a blob written or touched
        within the idle period is never collected, so a row about to name it is safe (see
        :meth:`delete_if_idle`)."""
        digest = sha256_hex(data)
        with self._collection_lock:
            # Touch-or-write and the collector's check-then-delete never interleave in this process; a
            # blob deleted by another process just before the touch is simply written again.
            if not self._touch(digest):
                self._write(digest, data)
        return digest

    def get(self, digest: str) -> bytes:
        """The blob, verified against its name: a file damaged on disk is refused, never served."""
        check_digest(digest)
        data = self._read(digest)
        if data is None:
            raise NotFound("artifact", digest)
        if sha256_hex(data) != digest:
            raise CorruptArtifact(f"artifact {digest} is damaged: its bytes no longer match its SHA-256")
        return data

    def exists(self, digest: str) -> bool:
        return self._exists(check_digest(digest))

    def delete(self, digest: str) -> None:
        self._delete(check_digest(digest))

    def delete_if_idle(self, digest: str, *, idle_seconds: float, now: float | None = None) -> bool:
        """Delete the blob unless it was written or touched in the last ``idle_seconds``; True if deleted.

        The caller has checked that no committed row names the blob. One being written right now (an
        upload of the same bytes, its row not yet committed) has just been touched, so it survives."""
        check_digest(digest)
        with self._collection_lock:
            modified = self._modified(digest)
            if modified is None or (now if now is not None else time.time()) - modified < idle_seconds:
                return False
            self._delete(digest)
            return True

    def digests(self) -> Iterator[str]:
        """Every stored blob's digest (for garbage collection)."""
        return self._list()

    @abstractmethod
    def _write(self, digest: str, data: bytes) -> None:
        """Write atomically: the blob is either absent or complete."""

    @abstractmethod
    def _read(self, digest: str) -> bytes | None: ...

    @abstractmethod
    def _exists(self, digest: str) -> bool: ...

    @abstractmethod
    def _delete(self, digest: str) -> None: ...

    @abstractmethod
    def _touch(self, digest: str) -> bool:
        """Mark the blob as just used (its modification time becomes now); False if there is no blob."""

    @abstractmethod
    def _modified(self, digest: str) -> float | None:
        """When the blob was last written or touched (Unix seconds); None if it does not exist."""

    @abstractmethod
    def _list(self) -> Iterator[str]: ...


_BACKENDS: dict[str, Callable[[str], ArtifactStore]] = {}


def register_backend(scheme: str, factory: Callable[[str], ArtifactStore]) -> None:
    _BACKENDS[scheme] = factory


def open_store(url: str) -> ArtifactStore:
    """Open the store named by ``url`` (``file:///path`` or ``memory://``)."""
    # Imported here so each backend registers itself; heavy backends would be imported only when named.
    from maas.storage import local, memory  # noqa: F401

    scheme = urlparse(url).scheme or "file"
    try:
        factory = _BACKENDS[scheme]
    except KeyError:
        raise ValueError(f"no artifact store for scheme {scheme!r}; known: {sorted(_BACKENDS)}") from None
    return factory(url)
