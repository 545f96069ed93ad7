"""Tenants and API keys."""

from __future__ import annotations

from fastapi import APIRouter, status

from maas.api.auth import Admin, Developer, State
from maas.api.native.schemas import KeyCreate, KeyCreated, KeyOut, TenantCreate, TenantCreated, TenantOut
from maas.api.problems import PROBLEM_RESPONSES
from maas.auth import service as auth
from maas.auth.roles import Role

router = APIRouter(prefix="/api/v1", tags=["tenants & keys"], responses=PROBLEM_RESPONSES)


@router.post("/tenants", status_code=status.HTTP_201_CREATED, response_model=TenantCreated)
def create_tenant(body: TenantCreate, state: State, _: Admin) -> TenantCreated:
    """Create a tenant (platform admin only). The response holds its first developer key, shown once."""
    with state.session() as session:
        tenant, issued = auth.create_tenant(session, name=body.name)
    return TenantCreated(**TenantOut.model_validate(tenant).model_dump(), key=issued.secret, key_id=issued.key.id)


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(state: State, _: Admin) -> list[TenantOut]:
    with state.session() as session:
        return [TenantOut.model_validate(t) for t in auth.list_tenants(session)]


@router.post("/tenants/{tenant_id}/keys", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
def create_tenant_key(tenant_id: str, body: KeyCreate, state: State, _: Admin) -> KeyCreated:
    """Issue a key for a tenant as the platform admin (e.g. when a tenant lost all its developer keys)."""
    with state.session() as session:
        auth.get_tenant(session, tenant_id)
        issued = auth.create_key(session, tenant_id=tenant_id, name=body.name, role=Role(body.role))
    return KeyCreated(**KeyOut.model_validate(issued.key).model_dump(), key=issued.secret)


@router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
def create_key(body: KeyCreate, state: State, caller: Developer) -> KeyCreated:
    """Create a key in the caller's tenant. The secret is in this response only."""
    assert caller.tenant_id is not None
    with state.session() as session:
        issued = auth.create_key(session, tenant_id=caller.tenant_id, name=body.name, role=Role(body.role))
    return KeyCreated(**KeyOut.model_validate(issued.key).model_dump(), key=issued.secret)


@router.get("/keys", response_model=list[KeyOut])
def list_keys(state: State, caller: Developer) -> list[KeyOut]:
    assert caller.tenant_id is not None
    with state.session() as session:
        return [KeyOut.model_validate(k) for k in auth.list_keys(session, caller.tenant_id)]


@router.delete("/keys/{key_id}", response_model=KeyOut)
def revoke_key(key_id: str, state: State, caller: Developer) -> KeyOut:
    """Revoke a key: refused at once by this server, and by every other instance within the cache TTL."""
    assert caller.tenant_id is not None
    with state.session() as session:
        key = auth.revoke_key(session, tenant_id=caller.tenant_id, key_id=key_id)
        out = KeyOut.model_validate(key)
    state.keys.invalidate_key(key_id)
    return out
