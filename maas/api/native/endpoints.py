"""Endpoints and the native predict call."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Response, status
from sqlalchemy.orm import Session

from maas.api.auth import Developer, State, TenantCaller
from maas.api.native.schemas import EndpointCreate, EndpointOut, EndpointPatch, PredictRequest, PredictResponse
from maas.api.problems import PROBLEM_RESPONSES
from maas.db.tables import Endpoint
from maas.serving import endpoints as service

router = APIRouter(prefix="/api/v1/endpoints", tags=["endpoints"], responses=PROBLEM_RESPONSES)


def _endpoint_out(session: Session, endpoint: Endpoint) -> EndpointOut:
    serving = service.serving_version(session, endpoint)
    return EndpointOut(
        id=endpoint.id,
        name=endpoint.name,
        model=service.model_name_of(session, endpoint),
        version=endpoint.version,
        alias=endpoint.alias,
        serving_version=serving.version,
        url=f"/api/v1/endpoints/{endpoint.name}/predict",
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EndpointOut)
def create_endpoint(body: EndpointCreate, state: State, caller: Developer) -> EndpointOut:
    assert caller.tenant_id is not None
    with state.session() as session:
        endpoint = service.create_endpoint(
            session,
            tenant_id=caller.tenant_id,
            name=body.name,
            model=body.model,
            version=body.version,
            alias=body.alias,
        )
        out = _endpoint_out(session, endpoint)
    state.predictor.invalidate_routes(caller.tenant_id)
    return out


@router.get("", response_model=list[EndpointOut])
def list_endpoints(state: State, caller: Developer) -> list[EndpointOut]:
    assert caller.tenant_id is not None
    with state.session() as session:
        return [_endpoint_out(session, e) for e in service.list_endpoints(session, caller.tenant_id)]


@router.get("/{name}", response_model=EndpointOut)
def get_endpoint(name: str, state: State, caller: Developer) -> EndpointOut:
    assert caller.tenant_id is not None
    with state.session() as session:
        return _endpoint_out(session, service.get_endpoint(session, caller.tenant_id, name))


@router.patch("/{name}", response_model=EndpointOut)
def update_endpoint(name: str, body: EndpointPatch, state: State, caller: Developer) -> EndpointOut:
    """Switch the version or alias served. Requests already running finish on the old version."""
    assert caller.tenant_id is not None
    with state.session() as session:
        endpoint = service.update_endpoint(
            session, tenant_id=caller.tenant_id, name=name, model=body.model, version=body.version, alias=body.alias
        )
        out = _endpoint_out(session, endpoint)
    state.predictor.invalidate_routes(caller.tenant_id)
    return out


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_endpoint(name: str, state: State, caller: Developer) -> Response:
    assert caller.tenant_id is not None
    with state.session() as session:
        service.delete_endpoint(session, tenant_id=caller.tenant_id, name=name)
    state.predictor.invalidate_routes(caller.tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/predict", response_model=PredictResponse)
async def predict(name: str, body: PredictRequest, state: State, caller: TenantCaller) -> Response:
    """Predict: class labels (with probabilities) or values, and the model version that answered."""
    assert caller.tenant_id is not None
    with state.metrics.predict_latency.time():
        result = await state.predictor.predict(caller.tenant_id, name, body.instances, body.parameters)
    state.metrics.predictions.labels(caller.tenant_id, name).inc(len(body.instances))
    # Returned as-is (the response model documents the shape without a second validation pass), and
    # serialised with orjson: several times faster than the standard library on the hot path.
    return Response(orjson.dumps(result), media_type="application/json")
