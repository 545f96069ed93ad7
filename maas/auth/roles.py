"""Roles and what each may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"  # the platform operator: manages tenants, never a tenant's data
    DEVELOPER = "developer"  # everything inside one tenant
    CONSUMER = "consumer"  # predict only


TENANT_ROLES = (Role.DEVELOPER, Role.CONSUMER)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved from the bearer key once per request (from cache on the hot path)."""

    role: Role
    key_id: str
    tenant_id: str | None  # None only for the platform admin

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN
