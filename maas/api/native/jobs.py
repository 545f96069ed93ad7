"""Training jobs: submit, list, inspect, cancel, and follow their events (JSON or SSE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from maas.api.auth import Developer, State
from maas.api.native.schemas import MAX_EVENT_ID, JobCreate, JobEventOut, JobOut
from maas.api.problems import PROBLEM_RESPONSES
from maas.api.state import AppState
from maas.jobs import service as jobs
from maas.jobs.states import JobState

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=PROBLEM_RESPONSES)

_SSE_POLL_SECONDS = 0.5
EVENTS_PAGE_MAX = 1000


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut)
def submit_job(body: JobCreate, state: State, caller: Developer) -> JobOut:
    """Queue a training job. Everything is validated now: a bad target or hyperparameter is a 422, not a failed job."""
    assert caller.tenant_id is not None
    request = jobs.TrainRequest(
        dataset_id=body.dataset_id,
        dataset_version=body.dataset_version,
        family=body.family,
        target=body.target,
        task=body.task,
        hyperparameters=body.hyperparameters,
        model_name=body.model_name,
        columns=body.columns,
    )
    with state.session() as session:
        job = jobs.submit_training_job(
            session,
            tenant_id=caller.tenant_id,
            request=request,
            max_active_jobs=state.settings.max_active_jobs_per_tenant,
        )
        return JobOut.model_validate(job)


@router.get("", response_model=list[JobOut])
def list_jobs(state: State, caller: Developer, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[JobOut]:
    assert caller.tenant_id is not None
    with state.session() as session:
        return [JobOut.model_validate(j) for j in jobs.list_jobs(session, caller.tenant_id, limit=limit)]


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, state: State, caller: Developer) -> JobOut:
    assert caller.tenant_id is not None
    with state.session() as session:
        return JobOut.model_validate(jobs.get_job(session, caller.tenant_id, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, state: State, caller: Developer) -> JobOut:
    assert caller.tenant_id is not None
    with state.session() as session:
        return JobOut.model_validate(jobs.cancel_job(session, tenant_id=caller.tenant_id, job_id=job_id))


def _events_after(state: AppState, tenant_id: str, job_id: str, after: int) -> tuple[list[JobEventOut], bool]:
    with state.session() as session:
        # State first: an event committed after this read is caught by the next poll, never lost.
        finished = JobState(jobs.get_job(session, tenant_id, job_id).state).is_terminal
        rows = jobs.list_events(session, tenant_id=tenant_id, job_id=job_id, after=after)
        events = [JobEventOut.model_validate(e) for e in rows]
    return events, finished


@router.get(
    "/{job_id}/events",
    response_model=list[JobEventOut],
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON list, or SSE when asked"}},
)
async def job_events(
    job_id: str,
    request: Request,
    state: State,
    caller: Developer,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID, description="Only events with a larger id")] = 0,
    limit: Annotated[
        int, Query(ge=1, le=EVENTS_PAGE_MAX, description="Most events in a JSON page; page on with ?after=")
    ] = EVENTS_PAGE_MAX,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_EVENT_ID)] = None,
) -> JSONResponse | StreamingResponse:
    """Events of a job (state changes, per-epoch losses, metrics, progress and ETA).

    With `Accept: text/event-stream` the response is a live SSE stream that ends when the job does.
    """
    assert caller.tenant_id is not None
    tenant_id = caller.tenant_id
    start = last_event_id if last_event_id is not None else after
    events, finished = await run_in_threadpool(_events_after, state, tenant_id, job_id, start)
    if "text/event-stream" not in request.headers.get("accept", ""):
        return JSONResponse([e.model_dump(mode="json") for e in events[:limit]])

    async def stream() -> AsyncIterator[str]:
        batch, done, cursor = events, finished, start
        while True:
            for event in batch:
                cursor = event.id
                yield f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.model_dump(mode='json'))}\n\n"
            if done or await request.is_disconnected():
                return
            await asyncio.sleep(_SSE_POLL_SECONDS)
            batch, done = await run_in_threadpool(_events_after, state, tenant_id, job_id, cursor)
            if not batch and not done:
                yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
