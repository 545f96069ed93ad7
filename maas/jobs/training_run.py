"""One training attempt inside a worker: load the data, train with checkpoints, register the result.

Imported by the worker only after its heartbeat runs, because importing torch can take longer than a
short lease.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from maas.config import Settings
from maas.db.engine import session_scope
from maas.db.tables import DatasetVersion, UsageEvent
from maas.errors import Conflict, MaasError, NotFound, Unavailable
from maas.jobs.queue import LeaseLost, append_event, owned_job, transition
from maas.jobs.states import JobState
from maas.redaction import Redactor
from maas.registry.catalog import store_files
from maas.registry.service import NewVersion, StoredFile, register_version
from maas.storage import ArtifactStore, CorruptArtifact, open_store
from maas.training.registry import load_trainer
from maas.training.results import EpochReport, TrainedModel, TrainingData
from maas.training.trainer import TrainingCancelled

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


def _unexpected(exc: BaseException, job_id: str) -> str:
    """Our words for a failure we did not foresee: its text is a library's (it may name the server's files or
    the database's URL) and stays in the server log, with the traceback."""
    return f"the training worker failed unexpectedly ({type(exc).__name__}); see the server log, job id {job_id}"


def run_job(
    settings: Settings, factory: sessionmaker[Session], job_id: str, owner: str, cancel_requested: Callable[[], bool]
) -> int:
    store = open_store(settings.resolved_storage_url)
    attempt = _Attempt(factory, store, job_id, owner, Redactor.for_settings(settings))
    loaded = attempt.load()
    if loaded is None:
        return 0
    spec, tenant_id, data = loaded
    checkpoint_dir = settings.work_dir / "jobs" / job_id / "checkpoint"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    trained = attempt.train(data, spec, checkpoint_dir, cancel_requested)
    if trained is None:
        return 0
    if attempt.register(spec, tenant_id, trained, compute_seconds=time.monotonic() - started):
        shutil.rmtree(checkpoint_dir.parent, ignore_errors=True)
    return 0


@dataclass(frozen=True)
class _Attempt:
    """One attempt at one job, holding its lease. Each step either moves on or ends the job itself."""

    factory: sessionmaker[Session]
    store: ArtifactStore
    job_id: str
    owner: str
    # A stored reason is read by the job's owner (GET /api/v1/jobs/{id}, /v1/fine_tuning/jobs): no server path.
    redact: Callable[[str], str]

    def load(self) -> tuple[dict[str, Any], str, TrainingData] | None:
        """The job's spec, tenant and training data; None when the job failed because they are gone."""
        with session_scope(self.factory) as session:
            job = owned_job(session, job_id=self.job_id, owner=self.owner)
            spec, tenant_id = dict(job.spec), job.tenant_id
            version = session.get(DatasetVersion, spec["dataset_version_id"])
            try:
                if version is None:
                    raise NotFound("dataset version", spec["dataset_version_id"])
                content = self.store.get(version.digest)  # checks the digest: damaged bytes never train
                data = TrainingData(
                    kind=version.dataset.kind, format=version.format, content=content, fetch=self.store.get
                )
                return spec, tenant_id, data
            except (NotFound, CorruptArtifact) as exc:  # gone or damaged: no retry brings it back
                job.error = f"the data this job trains on cannot be read: {self.redact(exc.detail)}"
                transition(session, job, JobState.FAILED, reason=job.error)
                return None

    def train(
        self, data: TrainingData, spec: dict[str, Any], checkpoint_dir: Path, cancel_requested: Callable[[], bool]
    ) -> TrainedModel | None:
        """The trained model; None when the job ended (cancelled, or failed with its reason)."""

        def on_epoch(report: EpochReport) -> None:
            with session_scope(self.factory) as session:
                job = owned_job(session, job_id=self.job_id, owner=self.owner)
                job.progress = report.progress
                append_event(session, self.job_id, "epoch", _epoch_event(report))

        with session_scope(self.factory) as session:
            family = owned_job(session, job_id=self.job_id, owner=self.owner).family
        try:
            return load_trainer(family)(data, spec, checkpoint_dir, on_epoch, cancel_requested)
        except TrainingCancelled:
            self.finish(JobState.CANCELLED, reason="cancelled by the user")
        except LeaseLost:
            raise  # the job belongs to another attempt now: write nothing
        except Unavailable as exc:
            # Not the job's fault: this attempt ends and the job resumes from its checkpoint in a new one. The
            # reason goes into its events, for when attempts run out.
            self.note(f"attempt failed, will be retried: {self.redact(exc.detail)}")
            raise
        except (OSError, MemoryError, SQLAlchemyError) as exc:
            # The database, the disk, memory: the same, but the library's text (a file of the server's, the
            # database's URL) stays in the worker's log (the traceback of the re-raise, its one report); the
            # job's events, which its owner reads, get our words.
            self.note(f"attempt failed, will be retried: {_unexpected(exc, self.job_id)}")
            raise
        except MaasError as exc:
            self.finish(JobState.FAILED, reason=self.redact(exc.detail))  # ours (a diverging loss), paths aside
        except Exception as exc:
            # Training is deterministic given the data and the spec: a retry would fail the same way, so
            # the job fails once, with the reason, instead of dying five times with only an exit code.
            log.exception("job %s: training failed", self.job_id)
            self.finish(JobState.FAILED, reason=_unexpected(exc, self.job_id))
        return None

    def register(self, spec: dict[str, Any], tenant_id: str, trained: TrainedModel, *, compute_seconds: float) -> bool:
        """Store the artifact and register the version; False when the job failed instead."""
        digest = self.store.put(trained.artifact)
        files = store_files(self.store, trained.files)
        for attempt in range(_REGISTER_ATTEMPTS):
            try:
                self._register_once(spec, tenant_id, digest, files, trained, compute_seconds)
            except Conflict as exc:
                # Another job took the same version number (retry), or the name now belongs to a model of
                # another task (fails every time, and then the job does, with that reason).
                if attempt == _REGISTER_ATTEMPTS - 1:
                    self.finish(JobState.FAILED, reason=exc.detail)
                    return False
                continue
            # Committed: restore any blob a collector took (an old, idle, unnamed copy of the same bytes).
            if not self.store.exists(digest):
                self.store.put(trained.artifact)
            for name, stored in files.items():
                if not self.store.exists(stored.digest):
                    self.store.put(trained.files[name])
            return True
        return False

    def _register_once(
        self,
        spec: dict[str, Any],
        tenant_id: str,
        digest: str,
        files: dict[str, StoredFile],
        trained: TrainedModel,
        compute_seconds: float,
    ) -> None:
        """Register the model version, meter the compute and finish the job, in one transaction."""
        with session_scope(self.factory) as session:
            job = owned_job(session, job_id=self.job_id, owner=self.owner)
            model_version = register_version(
                session,
                tenant_id=tenant_id,
                new=NewVersion(
                    model_name=spec["model_name"],
                    family=job.family,
                    task=trained.task,
                    artifact_digest=digest,
                    artifact_format=trained.artifact_format,
                    files=files,
                    preprocessing=trained.preprocessing,
                    signature=trained.signature,
                    metrics=trained.metrics,
                    hyperparameters=trained.hyperparameters,
                    lineage={
                        "dataset_id": spec["dataset_id"],
                        "dataset_version": spec["dataset_version"],
                        "dataset_version_id": spec["dataset_version_id"],
                        "job_id": self.job_id,
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
                    tenant_id=tenant_id,
                    meter="training_compute_seconds",
                    quantity=compute_seconds,
                    resource_id=self.job_id,
                )
            )

    def note(self, message: str) -> None:
        try:
            with session_scope(self.factory) as session:
                append_event(session, self.job_id, "log", {"message": message[:2000]})
        except Exception:  # best effort: the database may be what failed
            log.warning("job %s: could not record: %s", self.job_id, message)

    def finish(self, state: JobState, *, reason: str) -> None:
        with session_scope(self.factory) as session:
            job = owned_job(session, job_id=self.job_id, owner=self.owner)
            if state is JobState.FAILED:
                job.error = reason
            transition(session, job, state, reason=reason)
