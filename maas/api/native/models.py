"""The model registry: models, versions (metrics, lineage, signature), aliases, ONNX download."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from sqlalchemy.orm import Session

from maas.api.auth import Developer, State
from maas.api.native.schemas import MAX_VERSION, AliasSet, ModelDetail, ModelOut, ModelVersionOut, ModelVersionSummary
from maas.api.problems import PROBLEM_RESPONSES
from maas.db.tables import Model
from maas.registry import service as registry

VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION)]
router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=PROBLEM_RESPONSES)


def _model_out(session: Session, model: Model, *, detail: bool = False) -> ModelOut:
    versions = registry.list_versions(session, model)
    base = {
        "id": model.id,
        "name": model.name,
        "family": model.family,
        "task": model.task,
        "created_at": model.created_at,
        "latest_version": versions[-1].version if versions else None,
        "aliases": registry.list_aliases(session, model),
    }
    if detail:
        return ModelDetail(**base, versions=[ModelVersionSummary.model_validate(v) for v in versions])
    return ModelOut(**base)


@router.get("", response_model=list[ModelOut])
def list_models(state: State, caller: Developer) -> list[ModelOut]:
    assert caller.tenant_id is not None
    with state.session() as session:
        return [_model_out(session, m) for m in registry.list_models(session, caller.tenant_id)]


@router.get("/{name}", response_model=ModelDetail)
def get_model(name: str, state: State, caller: Developer) -> ModelOut:
    assert caller.tenant_id is not None
    with state.session() as session:
        return _model_out(session, registry.get_model(session, caller.tenant_id, name), detail=True)


@router.get("/{name}/versions/{version}", response_model=ModelVersionOut)
def get_version(name: str, version: VersionPath, state: State, caller: Developer) -> ModelVersionOut:
    assert caller.tenant_id is not None
    with state.session() as session:
        return ModelVersionOut.model_validate(registry.get_version(session, caller.tenant_id, name, version))


@router.put("/{name}/aliases/{alias}", response_model=ModelDetail)
def set_alias(name: str, alias: str, body: AliasSet, state: State, caller: Developer) -> ModelOut:
    """Point an alias (e.g. `production`) at a version; endpoints following it switch within the cache TTL."""
    assert caller.tenant_id is not None
    with state.session() as session:
        registry.set_alias(session, tenant_id=caller.tenant_id, name=name, alias=alias, version=body.version)
    state.predictor.invalidate_routes(caller.tenant_id)
    with state.session() as session:
        return _model_out(session, registry.get_model(session, caller.tenant_id, name), detail=True)


@router.get(
    "/{name}/versions/{version}/artifact",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The model: ONNX or safetensors"}},
)
def download_artifact(name: str, version: VersionPath, state: State, caller: Developer) -> Response:
    assert caller.tenant_id is not None
    with state.session() as session:
        row = registry.get_version(session, caller.tenant_id, name, version)
        digest, extension = row.artifact_digest, row.artifact_format
    filename = f"{name}-v{version}.{extension}"  # .onnx or .safetensors: what the bytes are
    return Response(
        state.store.get(digest),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "ETag": f'"{digest}"'},
    )
