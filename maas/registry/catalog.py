"""Pretrained and multi-file models: the platform catalog and how any model is found by name.

Platform models belong to a reserved tenant and are marked ``visibility="platform"``: every tenant can
call them (usage is metered to the caller) but only the platform admin publishes them. A tenant's own
models stay private, and a tenant's model shadows a platform model of the same name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from maas.db.tables import Model, ModelAlias, ModelVersion, Tenant
from maas.db.tenancy import PLATFORM_TENANT_ID, scoped
from maas.errors import InvalidInput, NotFound
from maas.registry.service import NewVersion, StoredFile, register_version, version_files
from maas.storage import ArtifactStore

__all__ = ["PLATFORM_TENANT_ID", "ResolvedModel", "materialize", "publish_platform_model", "resolve_model_for_tenant"]

PLATFORM_TENANT_NAME = "platform"
SERVING_ALIAS = "production"  # when set, the version a model name serves; else the newest


@dataclass(frozen=True)
class ResolvedModel:
    """The version a model name serves for a tenant, with its files (name -> digest)."""

    model_id: str
    model_name: str
    family: str
    task: str
    platform: bool
    model_version_id: str
    version: int
    artifact_digest: str
    artifact_format: str
    files: dict[str, str]
    signature: dict[str, object]
    preprocessing: dict[str, object]


def ensure_platform_tenant(session: Session) -> None:
    """Create the reserved tenant that owns platform models (idempotent; called at start-up)."""
    if session.get(Tenant, PLATFORM_TENANT_ID) is None:
        session.add(Tenant(id=PLATFORM_TENANT_ID, name=PLATFORM_TENANT_NAME))
        session.flush()


def publish_platform_model(session: Session, new: NewVersion) -> ModelVersion:
    """Register ``new`` as the next version of a platform model visible to every tenant."""
    ensure_platform_tenant(session)
    version = register_version(session, tenant_id=PLATFORM_TENANT_ID, new=new)
    model = session.get(Model, version.model_id)
    assert model is not None
    model.visibility = "platform"
    session.flush()
    return version


def _serving_version(session: Session, model: Model) -> ModelVersion | None:
    alias = session.get(ModelAlias, (model.id, SERVING_ALIAS))
    number = alias.version if alias is not None else None
    if number is None:
        number = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
    if number is None:
        return None
    return session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == number)
    ).one_or_none()


def _platform_model(session: Session, name: str) -> Model | None:
    return session.scalars(
        select(Model).where(Model.tenant_id == PLATFORM_TENANT_ID, Model.name == name, Model.visibility == "platform")
    ).one_or_none()


def resolve_model_for_tenant(session: Session, tenant_id: str, name: str) -> ResolvedModel:
    """The tenant's own model called ``name``, else the platform model; ``NotFound("model", name)`` if none."""
    own = session.scalars(scoped(Model, tenant_id).where(Model.name == name)).one_or_none()
    model = own or _platform_model(session, name)
    version = _serving_version(session, model) if model is not None else None
    if model is None or version is None:
        raise NotFound("model", name)
    return ResolvedModel(
        model_id=model.id,
        model_name=model.name,
        family=model.family,
        task=model.task,
        platform=own is None,
        model_version_id=version.id,
        version=version.version,
        artifact_digest=version.artifact_digest,
        artifact_format=version.artifact_format,
        files=version_files(session, version.id),
        signature=dict(version.signature),
        preprocessing=dict(version.preprocessing),
    )


def list_models_for_tenant(session: Session, tenant_id: str) -> list[tuple[Model, bool]]:
    """(model, is_platform) for the tenant's own models and the platform catalog, own ones first."""
    own = list(session.scalars(scoped(Model, tenant_id).order_by(Model.name)))
    names = {model.name for model in own}
    platform = session.scalars(
        select(Model).where(Model.tenant_id == PLATFORM_TENANT_ID, Model.visibility == "platform").order_by(Model.name)
    )
    return [(model, False) for model in own] + [(model, True) for model in platform if model.name not in names]


def store_files(store: ArtifactStore, contents: dict[str, bytes]) -> dict[str, StoredFile]:
    """Put each file's bytes in the store; the result goes into ``NewVersion.files``."""
    return {name: StoredFile(digest=store.put(data), size_bytes=len(data)) for name, data in contents.items()}


def materialize(store: ArtifactStore, files: dict[str, str], cache_dir: Path) -> Path:
    """A directory holding ``files`` (name -> digest) under their names, for loaders that read directories.

    The directory is named by the files' digests, so it is written once and then reused by every tenant and
    endpoint of the same model; it is built under a temporary name and renamed, so a reader never sees a
    half-written one."""
    key = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:32]
    target = cache_dir / key
    if (target / ".complete").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        for name, digest in files.items():
            path = (staging / name).resolve()
            if staging.resolve() not in path.parents:  # names were checked at import; never trust them here
                raise InvalidInput(f"model file name {name!r} leaves the model's folder; this model cannot be served")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(store.get(digest))
        (staging / ".complete").write_text("ok")
        try:
            os.rename(staging, target)
        except OSError:  # another process finished first: use its copy
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
