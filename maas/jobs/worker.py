"""The training worker: one subprocess per job attempt (``python -m maas.jobs.worker``).

It reads ``{"settings": {...}, "job_id": ..., "lease_owner": ...}`` as JSON on stdin, keeps its own lease
alive from a heartbeat thread, checkpoints every epoch and, on success, registers the model version and
finishes the job in one transaction. If it is killed, the lease runs out and the job resumes elsewhere from
the last checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import logging
import os
import signal
import sys
import threading

from sqlalchemy.orm import Session, sessionmaker

from maas.config import Settings
from maas.db.engine import make_engine, make_session_factory, session_scope
from maas.errors import MaasError
from maas.jobs.queue import LeaseLost, renew_lease
from maas.logs import configure_json_logging

log = logging.getLogger("maas.worker")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """On Linux, ask the kernel to kill this worker when the server that spawned it dies.

    The job is then requeued when its lease expires, instead of an orphan racing a restarted server.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Heartbeat(threading.Thread):
    """Renews the lease; notices cancellation; kills the process when the lease is lost."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, job_id: str, owner: str) -> None:
        super().__init__(daemon=True, name="heartbeat")
        self.factory, self.settings, self.job_id, self.owner = factory, settings, job_id, owner
        self.cancel_requested = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.job_heartbeat_seconds):
            try:
                with session_scope(self.factory) as session:
                    cancel = renew_lease(
                        session, job_id=self.job_id, owner=self.owner, lease_seconds=self.settings.job_lease_seconds
                    )
                if cancel:
                    self.cancel_requested.set()
            except LeaseLost:
                log.error("lease on %s lost; stopping", self.job_id)
                os._exit(3)
            except MaasError:
                log.warning("heartbeat failed; retrying", exc_info=True)


def main() -> int:
    _die_with_parent()
    configure_json_logging()
    request = json.loads(sys.stdin.read())
    settings = Settings.model_validate(request["settings"])
    job_id, owner = request["job_id"], request["lease_owner"]
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    # Keep the lease alive before the slow part of start-up (importing torch) begins.
    heartbeat = Heartbeat(factory, settings, job_id, owner)
    heartbeat.start()
    training_run = importlib.import_module("maas.jobs.training_run")
    if settings.worker_threads:
        importlib.import_module("torch").set_num_threads(settings.worker_threads)
    try:
        return int(training_run.run_job(settings, factory, job_id, owner, heartbeat.cancel_requested.is_set))
    finally:
        heartbeat.stopped.set()


if __name__ == "__main__":
    sys.exit(main())
