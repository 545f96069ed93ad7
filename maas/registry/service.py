"""Model registry: a model is a tenant-scoped name; each training run adds version 1, 2, …"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from maas.db.tables import Model, ModelAlias, ModelFile, ModelVersion, utcnow
from maas.db.tenancy import get_owned, scoped
from maas.errors import Conflict, InvalidInput, NotFound
from maas.ids import new_id

_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class StoredFile:
    """A named file of a model version, already in the artifact store."""

    digest: str
    size_bytes: int


@dataclass(frozen=True)
class NewVersion:
    model_name: str
    family: str
    task: str
    artifact_digest: str
    artifact_format: str
    preprocessing: dict[str, Any]
    signature: dict[str, Any]
    metrics: dict[str, Any]
    hyperparameters: dict[str, Any]
    lineage: dict[str, Any]
    # Multi-file models (an HF-style directory: config.json, tokenizer.json, model.safetensors, ...).
    files: dict[str, StoredFile] = field(default_factory=dict)


def check_can_add_version(session: Session, *, tenant_id: str, name: str, family: str, task: str) -> Model | None:
    """The model named ``name`` (None if new); Conflict if its versions are of another family or task.

    Checked when a job is submitted, so a mismatch is a 409 at once instead of a job failing at the end."""
    model = session.scalars(scoped(Model, tenant_id).where(Model.name == name)).one_or_none()
    if model is not None and (model.family, model.task) != (family, task):
        raise Conflict(
            f"model '{name}' is a {model.family} {model.task} model; a {family} {task} version cannot be "
            "added to it: choose another model_name"
        )
    return model


def register_version(session: Session, *, tenant_id: str, new: NewVersion) -> ModelVersion:
    model = check_can_add_version(session, tenant_id=tenant_id, name=new.model_name, family=new.family, task=new.task)
    if model is None:
        model = Model(id=new_id("mdl"), tenant_id=tenant_id, name=new.model_name, family=new.family, task=new.task)
        session.add(model)
        session.flush()
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
    version = ModelVersion(
        id=new_id("mv"),
        model_id=model.id,
        tenant_id=tenant_id,
        version=(latest or 0) + 1,
        artifact_digest=new.artifact_digest,
        artifact_format=new.artifact_format,
        preprocessing=new.preprocessing,
        signature=new.signature,
        metrics=new.metrics,
        hyperparameters=new.hyperparameters,
        lineage=new.lineage,
    )
    session.add(version)
    session.flush()
    for name, stored in sorted(new.files.items()):
        session.add(
            ModelFile(model_version_id=version.id, name=name, digest=stored.digest, size_bytes=stored.size_bytes)
        )
    session.flush()
    return version


def version_files(session: Session, model_version_id: str) -> dict[str, str]:
    """Name -> digest of a version's files (empty for a single-artifact model)."""
    rows = session.scalars(select(ModelFile).where(ModelFile.model_version_id == model_version_id))
    return {row.name: row.digest for row in rows}


def list_models(session: Session, tenant_id: str) -> list[Model]:
    return list(session.scalars(scoped(Model, tenant_id).order_by(Model.name)))


def get_model(session: Session, tenant_id: str, name: str) -> Model:
    return get_owned(session, Model, tenant_id, "model", name=name)


def list_versions(session: Session, model: Model) -> list[ModelVersion]:
    return list(
        session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.version))
    )


def list_aliases(session: Session, model: Model) -> dict[str, int]:
    rows = session.scalars(select(ModelAlias).where(ModelAlias.model_id == model.id))
    return {row.alias: row.version for row in rows}


def get_version(session: Session, tenant_id: str, name: str, version: int) -> ModelVersion:
    model = get_model(session, tenant_id, name)
    row = session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == version)
    ).one_or_none()
    if row is None:
        raise NotFound("model version", f"{name}/{version}")
    return row


def set_alias(session: Session, *, tenant_id: str, name: str, alias: str, version: int) -> ModelAlias:
    if not _ALIAS.match(alias):
        raise InvalidInput(
            "alias must be 1-64 lowercase letters, digits, '-' or '_', starting with a letter",
            errors=[{"loc": ["path", "alias"], "msg": "invalid alias"}],
        )
    if alias == "latest":
        raise InvalidInput("'latest' is reserved: it always names the newest version")
    target = get_version(session, tenant_id, name, version)
    row = session.get(ModelAlias, (target.model_id, alias))
    if row is None:
        row = ModelAlias(model_id=target.model_id, alias=alias, version=version)
        session.add(row)
    else:
        row.version = version
        row.updated_at = utcnow()
    session.flush()
    return row


def resolve(session: Session, *, tenant_id: str, name: str, version: int | None, alias: str | None) -> ModelVersion:
    """The version an endpoint serves: pinned, by alias, or the newest ('latest')."""
    model = get_model(session, tenant_id, name)
    if version is None:
        if alias in (None, "latest"):
            newest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
            if newest is None:
                raise NotFound("model version", f"{name}/latest")
            version = newest
        else:
            row = session.get(ModelAlias, (model.id, alias))
            if row is None:
                raise NotFound("model alias", f"{name}@{alias}")
            version = row.version
    return get_version(session, tenant_id, name, version)
