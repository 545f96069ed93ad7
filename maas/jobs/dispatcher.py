"""The job dispatcher: a thread in the API process that feeds queued jobs to the executor.

It also requeues jobs whose worker died: at once when its own child exits badly, or when another
process's lease expires.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from maas.config import Settings
from maas.db.engine import session_scope
from maas.db.tables import Job
from maas.errors import MaasError
from maas.ids import new_id
from maas.jobs.executor import FinishedAttempt, JobExecutor
from maas.jobs.queue import claim_next, release_for_retry, requeue_expired
from maas.jobs.states import JobState

log = logging.getLogger("maas.dispatcher")


class Dispatcher:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], executor: JobExecutor) -> None:
        self._settings = settings
        self._factory = factory
        self._executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        stopped = self._executor.shutdown()
        with session_scope(self._factory) as session:
            for attempt in stopped:
                self._settle(session, attempt)

    def tick(self) -> None:
        """One round: reap, requeue the dead, launch what fits."""
        with session_scope(self._factory) as session:
            for attempt in self._executor.reap():
                self._settle(session, attempt)
            requeued = requeue_expired(session, max_attempts=self._settings.max_job_attempts)
        for expired_id in requeued:
            log.warning("job %s requeued after its lease expired", expired_id)
        while self._executor.running() < self._settings.max_concurrent_jobs and not self._stop.is_set():
            owner = new_id("lease")
            with session_scope(self._factory) as session:
                job = claim_next(session, owner=owner, lease_seconds=self._settings.job_lease_seconds)
                claimed = job.id if job is not None else None
            if claimed is None:
                return
            self._executor.launch(claimed, owner)

    def _settle(self, session: Session, attempt: FinishedAttempt) -> None:
        job = session.get(Job, attempt.job_id, populate_existing=True)
        if job is None or job.state != JobState.RUNNING.value or job.lease_owner != attempt.lease_owner:
            return  # the worker finished the job itself, or the job has moved on
        reason = f"the worker exited with code {attempt.exit_code} before finishing"
        log.warning("job %s: %s", attempt.job_id, reason)
        release_for_retry(session, job, reason=reason, max_attempts=self._settings.max_job_attempts)

    def _loop(self) -> None:
        while not self._stop.wait(self._settings.dispatcher_poll_seconds):
            try:
                self.tick()
            except MaasError:
                log.warning("dispatcher round failed; retrying", exc_info=True)
            except Exception:
                log.exception("dispatcher round crashed; retrying")
