"""``/v1/fine_tuning/jobs``: OpenAI fine-tuning on the platform's own training jobs (family ``causal-lm``).

A fine-tuning job is a platform job (``job_<hex>`` is ``ftjob-<hex>``) queued by
:func:`maas.jobs.service.submit_training_job`, so it runs, checkpoints, resumes and is metered like any
other; its events become OpenAI event objects and its result is a model of the tenant called
``ft-<base>-<suffix>-<random>`` (OpenAI's ``ft:<base>:...`` spelling has colons, which model names here
do not allow) that ``/v1/chat/completions`` serves. Every ``causal-lm`` job of the tenant is listed,
those started from the native API too.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from maas.api.auth import Developer, State
from maas.api.openai.errors import OpenAIError
from maas.api.openai.files import file_id, owned_dataset, unix
from maas.api.openai.ft_schemas import (
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCheckpointList,
    FineTuningJobCreate,
    FineTuningJobEvent,
    FineTuningJobEventList,
    FineTuningJobList,
    Hyperparameters,
    JobError,
)
from maas.db.tables import Dataset, Job, JobEvent
from maas.errors import NotFound
from maas.jobs import service as jobs
from maas.jobs.states import JobState
from maas.models.base import DatasetInfo, PlanRequest
from maas.models.causal_lm import CAUSAL_LM, DEFAULT_LEARNING_RATE, FAMILY_NAME
from maas.registry import catalog

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["openai"])

JOB_PREFIX = "ftjob-"
NATIVE_PREFIX = "job_"
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 8
MAX_PAGE = 100
_HEX = re.compile(r"[0-9a-f]{1,64}")
_NAME_PART = re.compile(r"[^A-Za-z0-9_.-]+")
_STATUS = {
    JobState.QUEUED: "queued",
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


def ft_job_id(job_id: str) -> str:
    return JOB_PREFIX + job_id.removeprefix(NATIVE_PREFIX)


def _not_found(identifier: str) -> OpenAIError:
    return OpenAIError(
        f"no fine-tuning job with id '{identifier}'", status=404, code="fine_tuning_job_not_found", param="job_id"
    )


def _owned_job(session: Session, tenant_id: str, identifier: str) -> Job:
    hex_part = identifier.removeprefix(JOB_PREFIX)
    if not identifier.startswith(JOB_PREFIX) or not _HEX.fullmatch(hex_part):
        raise _not_found(identifier)
    try:
        job = jobs.get_job(session, tenant_id, NATIVE_PREFIX + hex_part)
    except NotFound:
        raise _not_found(identifier) from None
    if job.family != FAMILY_NAME:
        raise _not_found(identifier)
    return job


def fine_tuned_name(base: str, suffix: str | None) -> str:
    """``ft-<base>[-<suffix>]-<8 hex>``: a valid model name (letters, digits, '-', '_', '.'; at most 100)."""
    token = secrets.token_hex(4)
    suffix_part = _NAME_PART.sub("-", suffix or "").strip("-._")[:40]
    room = 100 - len("ft--") - len(token) - (len(suffix_part) + 1 if suffix_part else 0)
    base_part = _NAME_PART.sub("-", base).strip("-._")[:room] or "model"
    return "-".join(part for part in ("ft", base_part, suffix_part, token) if part)


def _hyperparameters(body: FineTuningJobCreate) -> tuple[dict[str, Any], dict[str, Any]]:
    """(causal-lm hyperparameters for the job, OpenAI's three as shown on the job)."""
    chosen = body.hyperparameters
    if body.method is not None and body.method.supervised is not None and body.method.supervised.hyperparameters:
        chosen = body.method.supervised.hyperparameters
    chosen = chosen or Hyperparameters()
    extra = dict(chosen.model_extra or {})
    epochs = DEFAULT_EPOCHS if chosen.n_epochs == "auto" else chosen.n_epochs
    batch_size = DEFAULT_BATCH_SIZE if chosen.batch_size == "auto" else chosen.batch_size
    multiplier = 1.0 if chosen.learning_rate_multiplier == "auto" else chosen.learning_rate_multiplier
    method = str(extra.get("method", "lora"))
    if "learning_rate" not in extra and method in DEFAULT_LEARNING_RATE:
        extra["learning_rate"] = DEFAULT_LEARNING_RATE[method] * multiplier
    causal = {
        **extra,
        "mode": "finetune",
        "base_model": body.model,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": body.seed if body.seed is not None else extra.get("seed", 0),
    }
    shown = {"n_epochs": epochs, "batch_size": batch_size, "learning_rate_multiplier": multiplier}
    return causal, shown


def _validation_data(dataset: Dataset) -> dict[str, Any]:
    """What the trainer needs to read a separate validation file: its blob, format, shape and columns."""
    version = dataset.versions[-1]
    info = DatasetInfo(
        name=dataset.name,
        kind=dataset.kind,
        format=version.format,
        row_count=version.row_count,
        columns=list(version.columns),
    )
    plan = CAUSAL_LM.plan(info, PlanRequest(target=None, task=None))
    return {"digest": version.digest, "format": version.format, "shape": plan.extra["shape"], "roles": plan.roles}


def _resolve_base(session: Session, tenant_id: str, name: str) -> catalog.ResolvedModel:
    try:
        base = catalog.resolve_model_for_tenant(session, tenant_id, name)
    except NotFound:
        raise OpenAIError(
            f"the model '{name}' does not exist or you do not have access to it",
            status=404,
            code="model_not_found",
            param="model",
        ) from None
    if base.family != FAMILY_NAME:
        raise OpenAIError(
            f"the model '{name}' is a {base.family} model; fine-tuning needs a causal-lm (chat) model",
            code="model_not_supported",
            param="model",
        )
    return base


@router.post("", response_model=FineTuningJob)
def create_job(body: FineTuningJobCreate, state: State, caller: Developer) -> FineTuningJob:
    assert caller.tenant_id is not None
    tenant_id = caller.tenant_id
    training = owned_dataset(state, tenant_id, body.training_file, param="training_file")
    validation = (
        owned_dataset(state, tenant_id, body.validation_file, param="validation_file") if body.validation_file else None
    )
    hyperparameters, shown = _hyperparameters(body)
    with state.session() as session:
        base = _resolve_base(session, tenant_id, body.model)
        job = jobs.submit_training_job(
            session,
            tenant_id=tenant_id,
            request=jobs.TrainRequest(
                dataset_id=training.id,
                family=FAMILY_NAME,
                hyperparameters=hyperparameters,
                model_name=fine_tuned_name(body.model, body.suffix),
            ),
            max_active_jobs=state.settings.max_active_jobs_per_tenant,
        )
        spec = dict(job.spec)
        if "base_model_files" not in spec:  # pinned here while submit reads the base from the plan only
            spec["base_model"] = {"name": base.model_name, "version": base.version, "family": base.family}
            spec["base_model_files"] = base.files
        if validation is not None:
            spec["validation_data"] = _validation_data(validation)
        spec["openai"] = {
            "model": body.model,
            "training_file": body.training_file,
            "validation_file": body.validation_file,
            "hyperparameters": shown,
            "suffix": body.suffix,
            "metadata": body.metadata,
        }
        job.spec = spec
        session.flush()
        return _job_out(session, tenant_id, job)


def _epoch_events(session: Session, tenant_id: str, job: Job) -> list[JobEvent]:
    events = jobs.list_events(session, tenant_id=tenant_id, job_id=job.id, limit=100_000)
    return [event for event in events if event.kind == "epoch"]


def _job_out(session: Session, tenant_id: str, job: Job) -> FineTuningJob:
    spec = job.spec
    openai = spec.get("openai") or {}
    hyperparameters = spec.get("hyperparameters", {})
    job_state = JobState(job.state)
    result = job.result or {}
    trained_tokens = None
    if job_state is JobState.SUCCEEDED:
        epochs = _epoch_events(session, tenant_id, job)
        trained_tokens = int(sum(e.payload.get("train_metrics", {}).get("tokens", 0) for e in epochs))
    shown = openai.get("hyperparameters") or {
        "n_epochs": hyperparameters.get("epochs"),
        "batch_size": hyperparameters.get("batch_size"),
        "learning_rate_multiplier": 1.0,
    }
    return FineTuningJob(
        id=ft_job_id(job.id),
        created_at=unix(job.created_at),
        finished_at=unix(job.finished_at) if job.finished_at else None,
        model=openai.get("model") or hyperparameters.get("base_model") or f"{FAMILY_NAME} (from scratch)",
        fine_tuned_model=result.get("model") if job_state is JobState.SUCCEEDED else None,
        organization_id=tenant_id,
        status=_STATUS[job_state],
        hyperparameters=shown,
        training_file=openai.get("training_file") or file_id(spec["dataset_id"]),
        validation_file=openai.get("validation_file"),
        trained_tokens=trained_tokens,
        error=JobError(code="training_failed", message=job.error or "failed") if job_state is JobState.FAILED else None,
        seed=int(hyperparameters.get("seed", 0)),
        metadata=openai.get("metadata"),
        method={"type": "supervised", "supervised": {"hyperparameters": shown}},
    )


def _page_after(items: list[Any], after: str | None, limit: int) -> tuple[list[Any], bool]:
    if after is not None:
        ids = [item.id for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return items[:limit], len(items) > limit


@router.get("", response_model=FineTuningJobList)
def list_jobs(
    state: State,
    caller: Developer,
    after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> FineTuningJobList:
    assert caller.tenant_id is not None
    with state.session() as session:
        rows = [job for job in jobs.list_jobs(session, caller.tenant_id, limit=1000) if job.family == FAMILY_NAME]
        listed = [_job_out(session, caller.tenant_id, job) for job in rows]
    page, has_more = _page_after(listed, after, limit)
    return FineTuningJobList(data=page, has_more=has_more)


@router.get("/{job_id}", response_model=FineTuningJob)
def retrieve_job(job_id: str, state: State, caller: Developer) -> FineTuningJob:
    assert caller.tenant_id is not None
    with state.session() as session:
        return _job_out(session, caller.tenant_id, _owned_job(session, caller.tenant_id, job_id))


@router.post("/{job_id}/cancel", response_model=FineTuningJob)
def cancel_job(job_id: str, state: State, caller: Developer) -> FineTuningJob:
    assert caller.tenant_id is not None
    with state.session() as session:
        job = _owned_job(session, caller.tenant_id, job_id)
        job_state = JobState(job.state)
        if job_state.is_terminal:
            # The jobs service answers 409 naming the native 'job_…' id: the openai SDK retries a 409 twice
            # before raising, and the id is not the one the caller knows. OpenAI answers this with a 400.
            raise OpenAIError(
                f"fine-tuning job '{job_id}' has already {_STATUS[job_state]}; only a queued or running job can "
                "be cancelled",
                param="job_id",
                code="job_not_cancellable",
            )
        job = jobs.cancel_job(session, tenant_id=caller.tenant_id, job_id=job.id)
        return _job_out(session, caller.tenant_id, job)


def _state_message(payload: dict[str, Any], job: Job) -> tuple[str, str]:
    """(level, message) of a state change."""
    target, reason = payload.get("state"), payload.get("reason")
    if target == JobState.QUEUED.value:
        return (
            ("warn", f"Job re-queued: {reason}")
            if reason
            else ("info", f"Created fine-tuning job: {ft_job_id(job.id)}")
        )
    if target == JobState.RUNNING.value:
        return "info", "Fine-tuning job started"
    if target == JobState.SUCCEEDED.value:
        return "info", f"New fine-tuned model created: {payload.get('model') or (job.result or {}).get('model')}"
    if target == JobState.FAILED.value:
        return "error", f"Fine-tuning job failed: {reason or job.error}"
    if target == JobState.CANCELLED.value:
        return "info", f"Fine-tuning job cancelled{': ' + reason if reason else ''}"
    return "info", f"Job is {target}"


def _epoch_message(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    train = payload.get("train_metrics") or {}
    valid = payload.get("val_metrics") or {}
    step = int(train.get("step", payload.get("epoch", 0)))
    data: dict[str, Any] = {
        "step": step,
        "epoch": payload.get("epoch"),
        "total_epochs": payload.get("epochs"),
        "train_loss": payload.get("train_loss"),
        "train_perplexity": train.get("perplexity"),
    }
    message = (
        f"Epoch {payload.get('epoch')}/{payload.get('epochs')} (step {step}): training loss="
        f"{payload.get('train_loss', float('nan')):.4f}, perplexity={train.get('perplexity', float('nan')):.2f}"
    )
    if payload.get("val_loss") is not None:
        data |= {"valid_loss": payload["val_loss"], "valid_perplexity": valid.get("perplexity")}
        message += (
            f"; validation loss={payload['val_loss']:.4f}, perplexity={valid.get('perplexity', float('nan')):.2f}"
        )
    return message, data


def _event_out(event: JobEvent, job: Job) -> FineTuningJobEvent:
    created = unix(event.created_at)
    identifier = f"ftevent-{event.id}"
    if event.kind == "epoch":
        message, data = _epoch_message(event.payload)
        return FineTuningJobEvent(
            id=identifier, created_at=created, level="info", message=message, type="metrics", data=data
        )
    if event.kind == "state":
        level, message = _state_message(event.payload, job)
        return FineTuningJobEvent(id=identifier, created_at=created, level=level, message=message, type="message")
    text = str(event.payload.get("message") or event.payload)
    return FineTuningJobEvent(id=identifier, created_at=created, level="info", message=text, type="message")


@router.get("/{job_id}/events", response_model=FineTuningJobEventList)
def list_events(
    job_id: str,
    state: State,
    caller: Developer,
    after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> FineTuningJobEventList:
    """Newest first, as OpenAI lists them; page on with ``after=<the last id>``."""
    assert caller.tenant_id is not None
    with state.session() as session:
        job = _owned_job(session, caller.tenant_id, job_id)
        rows = jobs.list_events(session, tenant_id=caller.tenant_id, job_id=job.id, limit=100_000)
        events = [_event_out(event, job) for event in reversed(rows)]
    page, has_more = _page_after(events, after, limit)
    return FineTuningJobEventList(data=page, has_more=has_more)


@router.get("/{job_id}/checkpoints", response_model=FineTuningJobCheckpointList)
def list_checkpoints(
    job_id: str,
    state: State,
    caller: Developer,
    after: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 10,
) -> FineTuningJobCheckpointList:
    """One checkpoint per finished epoch, newest first. A job resumes from its latest one; only the last
    epoch of a succeeded job is a model you can call (its ``fine_tuned_model_checkpoint`` is that model)."""
    assert caller.tenant_id is not None
    with state.session() as session:
        job = _owned_job(session, caller.tenant_id, job_id)
        epochs = _epoch_events(session, caller.tenant_id, job)
    model = (job.result or {}).get("model") or job.spec.get("model_name", "model")
    succeeded = JobState(job.state) is JobState.SUCCEEDED
    checkpoints: list[FineTuningJobCheckpoint] = []
    for position, event in enumerate(epochs):
        message_data = _epoch_message(event.payload)[1]
        last = succeeded and position == len(epochs) - 1
        metrics = {k: float(v) for k, v in message_data.items() if isinstance(v, int | float) and k != "total_epochs"}
        checkpoints.append(
            FineTuningJobCheckpoint(
                id=f"ftckpt-{event.id}",
                created_at=unix(event.created_at),
                fine_tuned_model_checkpoint=model if last else f"{model}:ckpt-epoch-{event.payload.get('epoch')}",
                fine_tuning_job_id=ft_job_id(job.id),
                step_number=int(message_data["step"]),
                metrics=metrics,
            )
        )
    checkpoints.reverse()
    page, has_more = _page_after(checkpoints, after, limit)
    return FineTuningJobCheckpointList(
        data=page, has_more=has_more, first_id=page[0].id if page else None, last_id=page[-1].id if page else None
    )
