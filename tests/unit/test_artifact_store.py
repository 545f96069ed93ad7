"""One contract suite for every artifact store backend (STYLE habit 2): the local directory and the fake."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maas.errors import NotFound
from maas.storage import ArtifactStore, CorruptArtifact, open_store
from maas.storage.base import sha256_hex
from maas.storage.local import LocalArtifactStore


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    url = (tmp_path / "artifacts").as_uri() if request.param == "file" else "memory://"
    yield open_store(url)


def test_put_returns_the_sha256_and_get_gives_the_bytes_back(store: ArtifactStore) -> None:
    digest = store.put(b"weights")
    assert digest == sha256_hex(b"weights")
    assert store.get(digest) == b"weights" and store.exists(digest)


def test_the_same_bytes_are_stored_once(store: ArtifactStore) -> None:
    assert store.put(b"same") == store.put(b"same")


def test_missing_blob_is_not_found_and_delete_is_idempotent(store: ArtifactStore) -> None:
    digest = store.put(b"gone soon")
    store.delete(digest)
    store.delete(digest)
    assert not store.exists(digest)
    with pytest.raises(NotFound):
        store.get(digest)


@pytest.mark.parametrize("digest", ["../../etc/passwd", "ABC", "0" * 63, "g" * 64, "/" + "0" * 63])
def test_a_digest_is_never_a_path(store: ArtifactStore, digest: str) -> None:
    for operation in (store.get, store.exists, store.delete):
        with pytest.raises(ValueError, match="not a sha256 digest"):
            operation(digest)


def test_a_damaged_blob_on_disk_is_refused_not_served(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    digest = store.put(b"model bytes")
    path = tmp_path / digest[:2] / digest
    path.write_bytes(b"model bytez")
    with pytest.raises(CorruptArtifact, match="damaged"):
        store.get(digest)


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    for index in range(5):
        store.put(f"blob {index}".encode())
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]


def test_a_backend_missing_a_primitive_cannot_be_instantiated() -> None:
    class Incomplete(ArtifactStore):
        def _write(self, digest: str, data: bytes) -> None: ...

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


def test_only_an_idle_blob_is_deleted(store: ArtifactStore) -> None:
    digest = store.put(b"blob")
    later = time.time() + 120
    assert not store.delete_if_idle(digest, idle_seconds=60)  # just written
    assert list(store.digests()) == [digest]
    assert store.delete_if_idle(digest, idle_seconds=60, now=later)
    assert not store.exists(digest) and not store.delete_if_idle(digest, idle_seconds=60, now=later)
