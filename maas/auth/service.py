"""Tenants and API keys: the business rules, called by the API, the CLI and the tests alike."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from maas.auth.roles import TENANT_ROLES, Principal, Role
from maas.auth.secrets import display_prefix, generate_secret, hash_secret, secrets_match
from maas.db.tables import ApiKey, Tenant, utcnow
from maas.db.tenancy import PLATFORM_TENANT_ID, get_owned, scoped
from maas.errors import Conflict, InvalidInput, NotFound
from maas.ids import new_id

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class IssuedKey:
    """A key row plus its secret: the only moment the secret exists outside the caller's hands."""

    key: ApiKey
    secret: str


def _check_name(field: str, value: str) -> str:
    if not _NAME.match(value):
        raise InvalidInput(
            f"{field} must be 1-100 characters: letters, digits, '-', '_' or '.', starting with a letter or digit",
            errors=[{"loc": ["body", field], "msg": "invalid name"}],
        )
    return value


def create_tenant(session: Session, *, name: str) -> tuple[Tenant, IssuedKey]:
    """Create a tenant and its first developer key."""
    _check_name("name", name)
    if session.scalars(select(Tenant).where(Tenant.name == name)).first() is not None:
        raise Conflict(f"a tenant named '{name}' already exists")
    tenant = Tenant(id=new_id("ten"), name=name)
    session.add(tenant)
    session.flush()
    issued = create_key(session, tenant_id=tenant.id, name="default", role=Role.DEVELOPER)
    return tenant, issued


def list_tenants(session: Session) -> list[Tenant]:
    """Customer tenants; the reserved tenant that owns platform models is not one."""
    return list(session.scalars(select(Tenant).where(Tenant.id != PLATFORM_TENANT_ID).order_by(Tenant.created_at)))


def get_tenant(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None or tenant.id == PLATFORM_TENANT_ID:  # no keys for the catalog's owner: it is not a customer
        raise NotFound("tenant", tenant_id)
    return tenant


def create_key(session: Session, *, tenant_id: str, name: str, role: Role) -> IssuedKey:
    _check_name("name", name)
    if role not in TENANT_ROLES:
        raise InvalidInput(
            f"role must be one of {[r.value for r in TENANT_ROLES]}",
            errors=[{"loc": ["body", "role"], "msg": "invalid role"}],
        )
    secret = generate_secret()
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        role=role.value,
        secret_hash=hash_secret(secret),
        display_prefix=display_prefix(secret),
    )
    session.add(key)
    session.flush()
    return IssuedKey(key=key, secret=secret)


def list_keys(session: Session, tenant_id: str) -> list[ApiKey]:
    return list(session.scalars(scoped(ApiKey, tenant_id).order_by(ApiKey.created_at)))


def revoke_key(session: Session, *, tenant_id: str, key_id: str) -> ApiKey:
    key = get_owned(session, ApiKey, tenant_id, "key", id=key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def resolve_key(session: Session, secret: str) -> Principal | None:
    """The principal of a live tenant key, or None. The lookup is by hash, so timing reveals nothing."""
    key = session.scalars(select(ApiKey).where(ApiKey.secret_hash == hash_secret(secret))).first()
    if key is None or key.revoked_at is not None or not secrets_match(secret, key.secret_hash):
        return None
    return Principal(role=Role(key.role), key_id=key.id, tenant_id=key.tenant_id)
