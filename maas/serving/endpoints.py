"""Endpoints: a tenant-scoped name routed to a model version, pinned or followed through an alias."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from maas.db.tables import Endpoint, Model, ModelVersion, utcnow
from maas.db.tenancy import get_owned, scoped
from maas.errors import Conflict, InvalidInput
from maas.ids import new_id
from maas.registry import service as registry
from maas.serving.loaders import RUNTIMES

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _unservable(model: Model) -> str | None:
    """Why an endpoint cannot serve ``model``, or None: only families with a runtime here are served natively."""
    if model.family in RUNTIMES:
        return None
    return (
        f"model '{model.name}' is a {model.family} model, which endpoints do not serve: embedding and language "
        "models are served under their own name by /v1 (POST /v1/embeddings, /v1/chat/completions, /v1/completions)"
    )


def _check_servable(session: Session, version: ModelVersion) -> None:
    model = session.get(Model, version.model_id)
    assert model is not None
    if (reason := _unservable(model)) is not None:
        raise InvalidInput(reason, errors=[{"loc": ["body", "model"], "msg": reason}])


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
    _check_servable(session, resolved)
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
    _check_servable(session, resolved)
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


def serving_version(session: Session, endpoint: Endpoint) -> ModelVersion:
    """The version ``endpoint`` points at now: pinned, or through its alias."""
    return registry.resolve(
        session,
        tenant_id=endpoint.tenant_id,
        name=model_name_of(session, endpoint),
        version=endpoint.version,
        alias=endpoint.alias,
    )


def resolve_endpoint(session: Session, *, tenant_id: str, name: str) -> ModelVersion:
    """The version a predict call on endpoint ``name`` is served by.

    Creation refuses a model endpoints cannot serve, but an endpoint made before that check (an older
    database) may still name one: its calls are a 409 saying where the model is served, not a failure to
    load it (a KeyError in the runtime table, answered 500)."""
    endpoint = get_endpoint(session, tenant_id, name)
    version = serving_version(session, endpoint)
    model = session.get(Model, version.model_id)
    assert model is not None
    if (reason := _unservable(model)) is not None:
        raise Conflict(reason)
    return version
