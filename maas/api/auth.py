"""Authentication and role checks as FastAPI dependencies. Cache hits never touch the database."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from maas.api.state import AppState
from maas.auth.roles import Principal, Role
from maas.auth.secrets import hash_secret, secrets_match
from maas.auth.service import resolve_key
from maas.errors import Forbidden, Unauthorized

_ADMIN = Principal(role=Role.ADMIN, key_id="admin", tenant_id=None)


# The dependencies are coroutines on purpose: FastAPI runs a plain ``def`` dependency in a worker thread,
# and that hop costs more than everything else these functions do on the predict path.
async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.maas
    return state


State = Annotated[AppState, Depends(app_state)]


# Declared for the OpenAPI schema (the /docs page gets an "Authorize" button); errors stay ours.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer maas_sk_...`")


def _resolve(state: AppState, secret: str) -> Principal | None:
    with state.session() as session:
        return resolve_key(session, secret)


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    state: AppState = request.app.state.maas
    secret = credentials.credentials.strip() if credentials is not None else ""
    if not secret:
        raise Unauthorized("missing bearer key")
    if secrets_match(secret, state.admin_key_hash):
        return _ADMIN
    principal = await _cached_or_resolved(state, secret)
    if principal is None:
        raise Unauthorized("unknown or revoked key")
    return principal


async def _cached_or_resolved(state: AppState, secret: str) -> Principal | None:
    cached = state.keys.peek(secret)
    if cached is not None:
        return cached[0]

    generation = state.keys.generation

    async def lookup() -> Principal | None:
        principal = await run_in_threadpool(_resolve, state, secret)
        state.keys.store(secret, principal, generation)
        return principal

    # Keyed by the secret's hash (the in-flight table is no place for secrets to rest) and the revocation
    # generation: a request made after a revocation never joins a lookup that started before it.
    return await state.key_lookups.run((hash_secret(secret), generation), lookup)


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("only the platform admin may do this")
    return principal


async def require_developer(principal: CurrentPrincipal) -> Principal:
    if principal.role is not Role.DEVELOPER:
        raise Forbidden(f"this needs a developer key; this key's role is {principal.role.value}")
    return principal


async def require_tenant(principal: CurrentPrincipal) -> Principal:
    if principal.tenant_id is None:
        raise Forbidden("this needs a tenant key (developer or consumer); the admin key manages tenants only")
    return principal


Admin = Annotated[Principal, Depends(require_admin)]
Developer = Annotated[Principal, Depends(require_developer)]
TenantCaller = Annotated[Principal, Depends(require_tenant)]
