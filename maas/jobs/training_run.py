"""One training attempt inside a worker: load the data, train with checkpoints, register the result.

Imported by the worker only after its heartbeat runs, because importing torch can take longer than a
short lease.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from maas.config import Settings
from maas.data.service import load_version_frame
from maas.db.engine import session_scope
from maas.db.tables import DatasetVersion, UsageEvent
from maas.errors import Conflict, MaasError, Unavailable
from maas.jobs.queue import LeaseLost, append_event, owned_job, transition
from maas.jobs.states import JobState
from maas.models.tabular_mlp import TabularMLPHyperparameters
from maas.registry.service import NewVersion, register_version
from maas.storage import ArtifactStore, open_store
from maas.training.tabular import (
    EpochReport,
    TabularTrainSpec,
    TrainedTabularModel,
    TrainingCancelled,
    train_tabular,
)

log = logging.getLogger("maas.training_run")
_REGISTER_ATTEMPTS = 3


def _epoch_event(report: EpochReport) -> dict[str, Any]:
    return {
        "epoch": report.epoch,
        "epochs": report.epochs,
        "train_loss": report.train_loss,
        "val_loss": report.val_loss,
        "train_metrics": report.train_metrics,
        "val_metrics": report.val_metrics,
        "progress": report.progress,
        "eta_seconds": report.eta_seconds,
        "elapsed_seconds": report.elapsed_seconds,
    }


def run_job(
    settings: Settings, factory: sessionmaker[Session], job_id: str, owner: str, cancel_requested: Callable[[], bool]
) -> int:
    store: ArtifactStore = open_store(settings.resolved_storage_url)
    with session_scope(factory) as session:
        job = owned_job(session, job_id=job_id, owner=owner)
        spec, tenant_id = dict(job.spec), job.tenant_id
        version = session.get(DatasetVersion, spec["dataset_version_id"])
        if version is None:
            transition(session, job, JobState.FAILED, reason="the dataset version was deleted")
            job.error = "the dataset version this job trains on was deleted"
            return 0
        frame = load_version_frame(store, version)

    checkpoint_dir = settings.work_dir / "jobs" / job_id / "checkpoint"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def on_epoch(report: EpochReport) -> None:
        with session_scope(factory) as session:
            job = owned_job(session, job_id=job_id, owner=owner)
            job.progress = report.progress
            append_event(session, job_id, "epoch", _epoch_event(report))

    train_spec = TabularTrainSpec(
        target=spec["target"],
        task=spec["task"],
        hyperparameters=TabularMLPHyperparameters.model_validate(spec["hyperparameters"]),
        column_types=spec["column_types"],
    )
    try:
        trained = train_tabular(frame, train_spec, checkpoint_dir, on_epoch, cancel_requested)
    except TrainingCancelled:
        _finish(factory, job_id, owner, JobState.CANCELLED, reason="cancelled by the user")
        return 0
    except (LeaseLost, Unavailable):
        raise  # not the job's fault: this attempt ends, and the job resumes from its checkpoint elsewhere
    except MaasError as exc:
        _finish(factory, job_id, owner, JobState.FAILED, reason=exc.detail)
        return 0
    except Exception as exc:
        # Training is deterministic given the data and the spec: a retry would fail the same way, so the
        # job fails once, with the reason, instead of dying five times with only an exit code to show.
        log.exception("job %s: training failed", job_id)
        _finish(factory, job_id, owner, JobState.FAILED, reason=f"training failed: {type(exc).__name__}: {exc}")
        return 0

    digest = store.put(trained.onnx_bytes)
    compute_seconds = time.monotonic() - started
    for attempt in range(_REGISTER_ATTEMPTS):
        try:
            _register(factory, job_id, owner, spec, tenant_id, digest, trained, compute_seconds)
            break
        except Conflict as exc:
            # Another job took the same version number (retry), or the name now belongs to a model of
            # another task (fails every time, and then the job does, with that reason).
            if attempt == _REGISTER_ATTEMPTS - 1:
                _finish(factory, job_id, owner, JobState.FAILED, reason=exc.detail)
                return 0
    shutil.rmtree(checkpoint_dir.parent, ignore_errors=True)
    return 0


def _register(
    factory: sessionmaker[Session],
    job_id: str,
    owner: str,
    spec: dict[str, Any],
    tenant_id: str,
    digest: str,
    trained: TrainedTabularModel,
    compute_seconds: float,
) -> None:
    """Register the model version, meter the compute and finish the job, in one transaction."""
    with session_scope(factory) as session:
        job = owned_job(session, job_id=job_id, owner=owner)
        model_version = register_version(
            session,
            tenant_id=tenant_id,
            new=NewVersion(
                model_name=spec["model_name"],
                family=job.family,
                task=trained.task,
                artifact_digest=digest,
                preprocessing=trained.preprocessing,
                signature=trained.signature,
                metrics=trained.metrics,
                hyperparameters=trained.hyperparameters,
                lineage={
                    "dataset_id": spec["dataset_id"],
                    "dataset_version": spec["dataset_version"],
                    "dataset_version_id": spec["dataset_version_id"],
                    "job_id": job_id,
                    "epochs_run": trained.epochs_run,
                },
            ),
        )
        job.progress = 1.0
        job.result = {
            "model": spec["model_name"],
            "version": model_version.version,
            "model_version_id": model_version.id,
        }
        transition(session, job, JobState.SUCCEEDED, model=spec["model_name"], version=model_version.version)
        session.add(
            UsageEvent(
                tenant_id=tenant_id, meter="training_compute_seconds", quantity=compute_seconds, resource_id=job_id
            )
        )


def _finish(factory: sessionmaker[Session], job_id: str, owner: str, state: JobState, *, reason: str) -> None:
    with session_scope(factory) as session:
        job = owned_job(session, job_id=job_id, owner=owner)
        if state is JobState.FAILED:
            job.error = reason
        transition(session, job, state, reason=reason)
