"""Tenant scoping in one place (DESIGN decision 10): another tenant's row answers like a missing one."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from maas.errors import NotFound

RowT = TypeVar("RowT")


# The reserved tenant that owns platform models (maas.registry.catalog); never listed as a customer tenant.
PLATFORM_TENANT_ID = "tn_platform"


def scoped(model: type[RowT], tenant_id: str) -> Select[RowT]:
    """A SELECT over ``model`` restricted to one tenant's rows."""
    return select(model).where(model.tenant_id == tenant_id)  # type: ignore[attr-defined]


def get_owned(session: Session, model: type[RowT], tenant_id: str, kind: str, **filters: Any) -> RowT:
    """The single row of ``model`` owned by ``tenant_id`` matching ``filters``, or ``NotFound``."""
    statement = scoped(model, tenant_id).filter_by(**filters)
    row = session.scalars(statement).one_or_none()
    if row is None:
        shown = next(iter(filters.values()), "?")
        raise NotFound(kind, str(shown))
    return row
