"""Submitting, reading and cancelling jobs: validation happens here, before anything is queued."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from maas.data import service as datasets
from maas.db.tables import Job, JobEvent
from maas.db.tenancy import get_owned, scoped
from maas.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from maas.ids import new_id
from maas.jobs.queue import append_event, transition
from maas.jobs.states import JobState
from maas.models import FAMILIES
from maas.models.base import DatasetInfo, PlanRequest
from maas.registry import catalog
from maas.registry import service as registry

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class TrainRequest:
    dataset_id: str
    family: str
    target: str | None = None
    dataset_version: int | None = None
    task: str | None = None
    hyperparameters: dict[str, Any] | None = None
    model_name: str | None = None
    columns: dict[str, str] | None = None  # role -> column, e.g. {"text": "review"}; the family says which


def _field_error(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", errors=[{"loc": ["body", field], "msg": message}])


def _validated_hyperparameters(family: str, raw: dict[str, Any]) -> dict[str, Any]:
    params_class = FAMILIES[family].hyperparameters
    try:
        return params_class.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        errors = [
            {"loc": ["body", "hyperparameters", *map(str, err["loc"])], "msg": err["msg"]} for err in exc.errors()
        ]
        named = "; ".join(f"hyperparameters.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid hyperparameters: {named}", errors=errors) from None


def _default_model_name(dataset_name: str, suffix: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{dataset_name}-{suffix}").strip("-._")
    return (cleaned or "model")[:100]


def submit_training_job(
    session: Session, *, tenant_id: str, request: TrainRequest, max_active_jobs: int | None = None
) -> Job:
    """Validate and queue a job. ``max_active_jobs`` caps the tenant's queued and running jobs (429 beyond)."""
    active = _active_jobs(session, tenant_id)
    if max_active_jobs is not None and len(active) >= max_active_jobs:
        raise QuotaExceeded(
            f"{len(active)} of your jobs are queued or running; the limit is {max_active_jobs} "
            "(MAAS_MAX_ACTIVE_JOBS_PER_TENANT): wait for one to finish, or cancel one"
        )
    if request.family not in FAMILIES:
        raise _field_error("family", f"unknown family '{request.family}'; known: {sorted(FAMILIES)}")
    version = datasets.resolve_version(session, tenant_id, request.dataset_id, request.dataset_version)
    family = FAMILIES[request.family]
    dataset = DatasetInfo(
        name=version.dataset.name,
        kind=version.dataset.kind,
        format=version.format,
        row_count=version.row_count,
        columns=list(version.columns),
    )
    plan = family.plan(dataset, PlanRequest(target=request.target, task=request.task, columns=request.columns or {}))
    task = plan.task
    hyperparameters = _validated_hyperparameters(request.family, request.hyperparameters or {})
    model_name = request.model_name or _default_model_name(version.dataset.name, plan.target or request.family)
    if not _MODEL_NAME.match(model_name):
        raise _field_error("model_name", "1-100 characters: letters, digits, '-', '_' or '.', starting alphanumeric")
    registry.check_can_add_version(session, tenant_id=tenant_id, name=model_name, family=request.family, task=task)
    _check_active_jobs_agree(active, model_name=model_name, family=request.family, task=task)
    base_model = _base_model(
        session, tenant_id, plan.extra.get("base_model") or hyperparameters.get("base_model"), family=request.family
    )
    job = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        family=request.family,
        state=JobState.QUEUED.value,
        spec={
            "dataset_id": version.dataset_id,
            "dataset_version": version.version,
            "dataset_version_id": version.id,
            "target": plan.target,
            "task": task,
            "roles": plan.roles,
            "plan": plan.extra,
            "hyperparameters": hyperparameters,
            "model_name": model_name,
            "column_types": {column["name"]: column["type"] for column in version.columns},
            **base_model,
        },
    )
    session.add(job)
    session.flush()
    append_event(session, job.id, "state", {"state": JobState.QUEUED.value})
    return job


def _base_model(session: Session, tenant_id: str, name: Any, *, family: str) -> dict[str, Any]:
    """For a fine-tune: the base model the tenant may use (its own or a platform model), pinned to a version."""
    if name is None:
        return {}
    try:
        base = catalog.resolve_model_for_tenant(session, tenant_id, str(name))
    except NotFound:
        detail = f"no model named '{name}' in your tenant or the platform catalog"
        raise _field_error("hyperparameters.base_model", detail) from None
    if base.family != family:
        detail = f"'{name}' is a {base.family} model; a {family} job can only start from a {family} model"
        raise _field_error("hyperparameters.base_model", detail)
    return {
        "base_model": {
            "name": base.model_name,
            "version": base.version,
            "model_version_id": base.model_version_id,
            "family": base.family,
            "artifact_digest": base.artifact_digest,
        },
        "base_model_files": base.files,
    }


def _active_jobs(session: Session, tenant_id: str) -> list[Job]:
    """The tenant's queued and running jobs."""
    states = [JobState.QUEUED.value, JobState.RUNNING.value]
    return list(session.scalars(scoped(Job, tenant_id).where(Job.state.in_(states))))


def _check_active_jobs_agree(active: list[Job], *, model_name: str, family: str, task: str) -> None:
    """A queued or running job that will register ``model_name`` as another family or task wins the name."""
    for job in active:
        if job.spec.get("model_name") == model_name and (job.family, job.spec.get("task")) != (family, task):
            raise Conflict(
                f"job {job.id} ({job.state}) will register model '{model_name}' as a {job.family} "
                f"{job.spec.get('task')} model; a {family} {task} job cannot add versions to it: choose "
                "another model_name"
            )


def list_jobs(session: Session, tenant_id: str, *, limit: int = 100) -> list[Job]:
    return list(session.scalars(scoped(Job, tenant_id).order_by(Job.created_at.desc()).limit(limit)))


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    return get_owned(session, Job, tenant_id, "job", id=job_id)


def cancel_job(session: Session, *, tenant_id: str, job_id: str) -> Job:
    """Queued jobs are cancelled at once; running ones at the worker's next check (within one heartbeat)."""
    job = get_job(session, tenant_id, job_id)
    state = JobState(job.state)
    if state.is_terminal:
        raise Conflict(f"job {job_id} is already {state.value}")
    if state is JobState.QUEUED:
        transition(session, job, JobState.CANCELLED, reason="cancelled by the user")
    else:
        job.cancel_requested = True
        append_event(session, job.id, "log", {"message": "cancellation requested"})
    return job


def list_events(session: Session, *, tenant_id: str, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
    get_job(session, tenant_id, job_id)
    statement = (
        select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after).order_by(JobEvent.id).limit(limit)
    )
    return list(session.scalars(statement))
