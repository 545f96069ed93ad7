"""Endpoints: a tenant-scoped name routed to a model version, pinned or followed through an alias."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from maas.db.tables import Endpoint, Model, ModelVersion, utcnow
from maas.db.tenancy import get_owned, scoped
from maas.errors import Conflict, InvalidInput
from maas.ids import new_id
from maas.registry import service as registry

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _check_target(version: int | None, alias: str | None) -> None:
    if version is not None and alias is not None:
        raise InvalidInput(
            "give either 'version' or 'alias', not both",
            errors=[{"loc": ["body", "alias"], "msg": "conflicts with version"}],
        )


def create_endpoint(
    session: Session, *, tenant_id: str, name: str, model: str, version: int | None, alias: str | None
) -> Endpoint:
    if not _NAME.match(name):
        raise InvalidInput(
            "endpoint name must be 1-63 lowercase letters, digits or '-', starting with a letter or digit",
            errors=[{"loc": ["body", "name"], "msg": "invalid name"}],
        )
    _check_target(version, alias)
    if session.scalars(scoped(Endpoint, tenant_id).where(Endpoint.name == name)).first() is not None:
        raise Conflict(f"an endpoint named '{name}' already exists")
    resolved = registry.resolve(session, tenant_id=tenant_id, name=model, version=version, alias=alias)
    endpoint = Endpoint(
        id=new_id("ep"),
        tenant_id=tenant_id,
        name=name,
        model_id=resolved.model_id,
        version=version,
        alias=alias if version is None else None,
    )
    if endpoint.version is None and endpoint.alias is None:
        endpoint.alias = "latest"
    session.add(endpoint)
    session.flush()
    return endpoint


def list_endpoints(session: Session, tenant_id: str) -> list[Endpoint]:
    return list(session.scalars(scoped(Endpoint, tenant_id).order_by(Endpoint.name)))


def get_endpoint(session: Session, tenant_id: str, name: str) -> Endpoint:
    return get_owned(session, Endpoint, tenant_id, "endpoint", name=name)


def update_endpoint(
    session: Session, *, tenant_id: str, name: str, model: str | None, version: int | None, alias: str | None
) -> Endpoint:
    endpoint = get_endpoint(session, tenant_id, name)
    _check_target(version, alias)
    if version is None and alias is None and model is None:
        raise InvalidInput("nothing to change: give 'version', 'alias' or 'model'")
    model_name = model or model_name_of(session, endpoint)
    resolved = registry.resolve(
        session,
        tenant_id=tenant_id,
        name=model_name,
        version=version,
        alias=alias or ("latest" if version is None else None),
    )
    endpoint.model_id = resolved.model_id
    endpoint.version = version
    endpoint.alias = None if version is not None else (alias or "latest")
    endpoint.updated_at = utcnow()
    session.flush()
    return endpoint


def delete_endpoint(session: Session, *, tenant_id: str, name: str) -> None:
    session.delete(get_endpoint(session, tenant_id, name))


def model_name_of(session: Session, endpoint: Endpoint) -> str:
    model = session.get(Model, endpoint.model_id)
    assert model is not None
    return model.name


def resolve_endpoint(session: Session, *, tenant_id: str, name: str) -> ModelVersion:
    endpoint = get_endpoint(session, tenant_id, name)
    return registry.resolve(
        session,
        tenant_id=tenant_id,
        name=model_name_of(session, endpoint),
        version=endpoint.version,
        alias=endpoint.alias,
    )
