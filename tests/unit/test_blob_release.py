"""Blobs are deleted only when no row of any tenant names them and nobody touched them lately."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from maas.data import blobs
from maas.data import service as datasets
from maas.db.engine import make_engine, make_session_factory, session_scope
from maas.db.tables import Base, Tenant
from maas.storage.local import LocalArtifactStore

IDLE = 60.0


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'maas.db'}")
    Base.metadata.create_all(engine)
    made = make_session_factory(engine)
    with session_scope(made) as session:
        session.add_all([Tenant(id="ten_a", name="a"), Tenant(id="ten_b", name="b")])
    yield made
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def _upload(factory: sessionmaker[Session], store: LocalArtifactStore, content: bytes, tenant: str) -> str:
    with session_scope(factory) as session:
        version = datasets.upload_dataset(
            session, store, tenant_id=tenant, name="d", filename="d.csv", content=content, max_bytes=10**6
        )
        return version.dataset_id


def _age(store: LocalArtifactStore, digest: str, seconds: float) -> None:
    path = store.root / digest[:2] / digest
    past = time.time() - seconds
    os.utime(path, (past, past))


def _delete(factory: sessionmaker[Session], store: LocalArtifactStore, tenant: str, dataset_id: str) -> list[str]:
    with session_scope(factory) as session:
        digests = datasets.delete_dataset(session, tenant_id=tenant, dataset_id=dataset_id)
    return blobs.release(factory, store, digests, idle_seconds=IDLE)


def test_an_idle_unnamed_blob_is_deleted_and_a_shared_one_kept(
    factory: sessionmaker[Session], store: LocalArtifactStore
) -> None:
    own = _upload(factory, store, b"a,b\n1,2\n", "ten_a")
    _upload(factory, store, b"a,b\n1,2\n", "ten_b")  # the same bytes in another tenant: one shared blob
    (shared,) = store.digests()
    _age(store, shared, 2 * IDLE)
    assert _delete(factory, store, "ten_a", own) == []  # tenant b's version still names it
    with session_scope(factory) as session:
        (other,) = datasets.list_datasets(session, "ten_b")
    assert _delete(factory, store, "ten_b", other.id) == [shared]
    assert not store.exists(shared)


def test_a_blob_another_tenant_just_uploaded_again_survives_a_delete(
    factory: sessionmaker[Session], store: LocalArtifactStore
) -> None:
    """The race: B uploads bytes A already has, and A deletes before B's row is committed."""
    content = b"a,b\n1,2\n"
    first = _upload(factory, store, content, "ten_a")
    digest = next(iter(store.digests()))
    _age(store, digest, 2 * IDLE)
    store.put(content)  # B's upload: the blob exists, so it is only touched; B's row is not committed yet
    assert _delete(factory, store, "ten_a", first) == []
    assert store.exists(digest)  # B's row, committed now, will find its blob


def test_the_sweep_collects_leftovers_once_idle(factory: sessionmaker[Session], store: LocalArtifactStore) -> None:
    named = _upload(factory, store, b"a,b\n1,2\n", "ten_a")
    orphan = store.put(b"an ONNX file of a job that failed to register")
    assert blobs.sweep(factory, store, idle_seconds=IDLE) == []  # too fresh
    _age(store, orphan, 2 * IDLE)
    assert blobs.sweep(factory, store, idle_seconds=IDLE) == [orphan]
    assert named and len(list(store.digests())) == 1
