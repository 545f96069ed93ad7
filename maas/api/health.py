"""Liveness, readiness, Prometheus metrics, and the family catalogue."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from maas.api.auth import Admin, State, TenantCaller
from maas.billing.usage import usage_summary
from maas.db.migrate import is_at_head
from maas.models import FAMILIES

log = logging.getLogger("maas.api")

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: State) -> JSONResponse:
    """The database answers and its schema is current."""
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        ready = is_at_head(state.engine)
    except Exception as exc:  # readiness reports, it never raises
        # Anyone may call /readyz: the driver's text (host names, users, file paths) is for the server log only,
        # one line per probe (probes come every few seconds while the database is down).
        log.warning("readiness check: the database does not answer: %s", exc)
        return JSONResponse({"status": "unavailable", "detail": "database unavailable"}, status_code=503)
    if not ready:
        return JSONResponse(
            {"status": "unavailable", "detail": "database schema is not at the newest migration"}, status_code=503
        )
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=Response)
def metrics(state: State, _: Admin) -> Response:
    """Prometheus metrics, for the platform admin only: they name tenants, endpoints and their traffic.

    Scrape with the admin key (Prometheus `authorization: {credentials: <key>}`)."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/families", tags=["models"])
def families(_: TenantCaller) -> list[dict[str, Any]]:
    """Model families with their hyperparameters, bounds and defaults (the schema the API validates with)."""
    return [family.describe() for family in FAMILIES.values()]


@router.get("/api/v1/usage", tags=["billing"])
def usage(state: State, caller: TenantCaller) -> dict[str, Any]:
    """Metered usage of the caller's tenant (predictions, training compute seconds), flushed every few seconds."""
    assert caller.tenant_id is not None
    state.usage.flush()
    with state.session() as session:
        return {"tenant_id": caller.tenant_id, "totals": usage_summary(session, caller.tenant_id)}
