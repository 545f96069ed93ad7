"""Where job attempts run. The local executor starts one worker subprocess per attempt."""

from __future__ import annotations

import json
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from maas.config import Settings


@dataclass(frozen=True)
class FinishedAttempt:
    job_id: str
    lease_owner: str
    exit_code: int


class JobExecutor(ABC):
    @abstractmethod
    def launch(self, job_id: str, lease_owner: str) -> None: ...

    @abstractmethod
    def reap(self) -> list[FinishedAttempt]:
        """Attempts that ended since the last call."""

    @abstractmethod
    def running(self) -> int: ...

    @abstractmethod
    def shutdown(self) -> list[FinishedAttempt]:
        """Stop every attempt still running and report them."""


class LocalSubprocessExecutor(JobExecutor):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._children: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}

    def launch(self, job_id: str, lease_owner: str) -> None:
        log_dir = self._settings.work_dir / "jobs" / job_id
        log_dir.mkdir(parents=True, exist_ok=True)
        payload = {"settings": self._settings.model_dump(mode="json"), "job_id": job_id, "lease_owner": lease_owner}
        with Path(log_dir / "worker.log").open("ab") as log_file:
            child = subprocess.Popen(
                [sys.executable, "-m", "maas.jobs.worker"],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        assert child.stdin is not None
        child.stdin.write(json.dumps(payload).encode())
        child.stdin.close()
        self._children[job_id] = (lease_owner, child)

    def reap(self) -> list[FinishedAttempt]:
        finished = []
        for job_id, (owner, child) in list(self._children.items()):
            code = child.poll()
            if code is not None:
                del self._children[job_id]
                finished.append(FinishedAttempt(job_id, owner, code))
        return finished

    def running(self) -> int:
        return len(self._children)

    def shutdown(self) -> list[FinishedAttempt]:
        # Workers are killed, not drained: their jobs resume from the last checkpoint on the next start.
        for _, child in self._children.values():
            child.kill()
        for _, child in self._children.values():
            child.wait(timeout=10)
        return self.reap()
