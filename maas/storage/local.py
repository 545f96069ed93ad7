"""Artifacts as files under one directory, fanned out by digest prefix."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from maas.storage.base import ArtifactStore, is_digest, register_backend


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def _write(self, digest: str, data: bytes) -> None:
        target = self._path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Temp file in the same directory, fsync, rename: readers never see a partial blob.
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    def _read(self, digest: str) -> bytes | None:
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def _exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def _delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

    def _touch(self, digest: str) -> bool:
        try:
            os.utime(self._path(digest))
        except FileNotFoundError:
            return False
        return True

    def _modified(self, digest: str) -> float | None:
        try:
            return self._path(digest).stat().st_mtime
        except FileNotFoundError:
            return None

    def _list(self) -> Iterator[str]:
        for path in self.root.glob("??/*"):
            if is_digest(path.name):  # never the temporary files of writes in progress
                yield path.name


def _from_url(url: str) -> ArtifactStore:
    return LocalArtifactStore(Path(unquote(urlparse(url).path)))


register_backend("file", _from_url)
