"""GET /v1/models and /v1/models/{id}: the tenant's own language models plus the platform catalog.

Also the one place /v1 routes turn a request's ``model`` into a version (``resolve``): the tenant's own model
of that name, else the platform's, cached for a short TTL so a hot path makes no database query.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from maas.api.auth import State, TenantCaller
from maas.api.openai.schemas import ModelList, ModelObject
from maas.api.state import AppState
from maas.db.tables import Model, Tenant
from maas.errors import NotFound
from maas.registry import catalog
from maas.registry.catalog import ResolvedModel
from maas.serving.embeddings import EmbeddingService

router = APIRouter(prefix="/v1/models", tags=["openai"])

# The families /v1 serves; tabular or image models of a tenant are not OpenAI models and are not listed.
OPENAI_FAMILIES = frozenset({"embedding", "causal-lm"})


@dataclass
class OpenAIRuntime:
    """Per-process state of the /v1 routes, created on first use (the app factory opens nothing for them)."""

    embeddings: EmbeddingService
    ttl_seconds: float
    _resolved: dict[tuple[str, str], tuple[float, ResolvedModel]] = field(default_factory=dict)

    def cached(self, tenant_id: str, name: str) -> ResolvedModel | None:
        hit = self._resolved.get((tenant_id, name))
        if hit is None or hit[0] <= time.monotonic():
            return None
        return hit[1]

    def remember(self, tenant_id: str, name: str, resolved: ResolvedModel) -> None:
        self._resolved[(tenant_id, name)] = (time.monotonic() + self.ttl_seconds, resolved)


async def openai_runtime(request: Request) -> OpenAIRuntime:
    runtime: OpenAIRuntime | None = getattr(request.app.state, "maas_openai", None)
    if runtime is None:
        state: AppState = request.app.state.maas
        runtime = OpenAIRuntime(
            embeddings=EmbeddingService(
                state.store,
                max_batch_requests=state.settings.batch_max_size,
                max_wait_s=state.settings.batch_max_wait_ms / 1000,
            ),
            ttl_seconds=state.settings.auth_cache_ttl_seconds,
        )
        request.app.state.maas_openai = runtime
    return runtime


Runtime = Annotated[OpenAIRuntime, Depends(openai_runtime)]


def _resolve_now(state: AppState, tenant_id: str, name: str) -> ResolvedModel:
    with state.session() as session:
        resolved = catalog.resolve_model_for_tenant(session, tenant_id, name)
    if resolved.family not in OPENAI_FAMILIES:
        raise NotFound("model", name)
    return resolved


async def resolve(state: AppState, runtime: OpenAIRuntime, tenant_id: str, name: str) -> ResolvedModel:
    """The version ``name`` serves for the tenant; 404 ``model_not_found`` when there is none."""
    hit = runtime.cached(tenant_id, name)
    if hit is not None:
        return hit
    resolved = await run_in_threadpool(_resolve_now, state, tenant_id, name)
    runtime.remember(tenant_id, name, resolved)
    return resolved


def _model_object(model: Model, platform: bool, tenant_name: str) -> ModelObject:
    return ModelObject(
        id=model.name,
        created=int(model.created_at.timestamp()),
        owned_by="platform" if platform else tenant_name,
    )


def _list(state: AppState, tenant_id: str) -> list[ModelObject]:
    with state.session() as session:
        tenant = session.get(Tenant, tenant_id)
        tenant_name = tenant.name if tenant is not None else tenant_id
        return [
            _model_object(model, platform, tenant_name)
            for model, platform in catalog.list_models_for_tenant(session, tenant_id)
            if model.family in OPENAI_FAMILIES
        ]


@router.get("", response_model=ModelList)
def list_models(state: State, caller: TenantCaller) -> ModelList:
    """Your own embedding and language models, then the platform catalog's (a name of yours shadows it)."""
    assert caller.tenant_id is not None
    return ModelList(data=_list(state, caller.tenant_id))


@router.get("/{model_id}", response_model=ModelObject)
def get_model(model_id: Annotated[str, Path(max_length=200)], state: State, caller: TenantCaller) -> ModelObject:
    assert caller.tenant_id is not None
    found = next((m for m in _list(state, caller.tenant_id) if m.id == model_id), None)
    if found is None:
        raise NotFound("model", model_id)
    return found
