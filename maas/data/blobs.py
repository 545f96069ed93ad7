"""Removing artifact blobs that no row names any more (DESIGN decision 4: blobs are immutable and shared).

Blobs are content-addressed, so one blob can back several dataset versions, in several tenants, a model's
ONNX artifact, or a file of a multi-file model. A blob is deleted only when no committed row names it *and*
it has been idle (not written or touched by ``ArtifactStore.put``) for ``idle_seconds``: an upload of the
same bytes whose row is not committed yet has just touched it, so it survives. Deletes happen after the
commit that dropped the rows, never before: a failed commit cannot leave rows pointing at nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maas.db.engine import session_scope
from maas.db.tables import DatasetVersion, ModelFile, ModelVersion
from maas.storage import ArtifactStore

_QUERY_CHUNK = 500


def referenced(session: Session, digests: Iterable[str]) -> set[str]:
    """The digests among ``digests`` that some dataset version or model version (of any tenant) names."""
    wanted = sorted(set(digests))
    found: set[str] = set()
    for start in range(0, len(wanted), _QUERY_CHUNK):
        chunk = wanted[start : start + _QUERY_CHUNK]
        found.update(session.scalars(select(DatasetVersion.digest).where(DatasetVersion.digest.in_(chunk))))
        found.update(
            session.scalars(select(ModelVersion.artifact_digest).where(ModelVersion.artifact_digest.in_(chunk)))
        )
        found.update(session.scalars(select(ModelFile.digest).where(ModelFile.digest.in_(chunk))))
    return found


def release(
    factory: sessionmaker[Session], store: ArtifactStore, digests: Iterable[str], *, idle_seconds: float
) -> list[str]:
    """Delete those of ``digests`` that no row names and that are idle; returns the deleted ones.

    Call it after the commit that stopped naming them."""
    candidates = set(digests)
    with session_scope(factory) as session:
        unused = candidates - referenced(session, candidates)
    return [digest for digest in sorted(unused) if store.delete_if_idle(digest, idle_seconds=idle_seconds)]


def sweep(factory: sessionmaker[Session], store: ArtifactStore, *, idle_seconds: float) -> list[str]:
    """Collect every unnamed, idle blob: what deletes left for later, failed uploads and failed jobs left."""
    return release(factory, store, store.digests(), idle_seconds=idle_seconds)
