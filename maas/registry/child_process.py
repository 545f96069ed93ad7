"""Run one step of an import (a conversion, a load check) in a child process under time and memory limits.

An imported model is a tenant's file: loading it may allocate without bound (a graph that expands a
constant to gigabytes, a config that asks for a vocabulary of billions) or spin. Nothing of that may
happen in the API process, so every load of an imported model's weights before it is registered runs
here: ``python -m <module> <args...> <out>``, with

- an address-space limit (``RLIMIT_AS``): an allocation past it fails inside the child, which reports a
  ``MemoryError`` or dies; either way the import is refused, the server keeps its memory;
- a limit on the size of any file it writes (``RLIMIT_FSIZE``): a conversion that would fill the disk is
  killed by the kernel at the limit, and the import refused;
- a wall-clock limit: past it the child is killed and the import refused. The child leads its own process
  group (session), and the whole group is killed, so nothing it started outlives it;
- no inherited secrets: the environment is reduced to what Python and the libraries need (no
  ``MAAS_ADMIN_KEY``, no database URL), and the working directory is the child's own output folder, so a
  relative path inside a model file resolves to nothing of the server's.

Children run one at a time, and at most ``_MAX_WAITING`` callers queue for their turn, each for at most
``_MAX_WAIT_S`` (the wait is not part of the child's own time limit): an import route is a sync handler in
the server's thread pool, and imports arriving faster than they convert would otherwise hold every thread of
it. Past either bound the caller gets ``Unavailable`` (503): the server is busy, try again shortly.

The child writes ``report.json`` into ``out``: a JSON object, with ``error`` set when the model is refused
(the message becomes the import's 422 detail, and must already be free of server paths).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maas.errors import InvalidInput, Unavailable

REPORT = "report.json"
_STDERR_TAIL_BYTES = 64 * 1024  # what is kept of a child's stderr: enough to tell a MemoryError
# Variables a child needs to find Python, its libraries and a temp dir; everything else stays behind.
_KEPT_ENVIRONMENT = (
    "PATH",
    "PYTHONPATH",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "OMP_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)
# torch and ONNX Runtime reserve address space they never touch (thread stacks, arenas): the limit is on
# address space, so it leaves room for that above what the model may really use.
_RESERVED_ADDRESS_SPACE = 6 << 30
# The largest file a child may write, unless its limits say otherwise: a converted model is a few times its
# source at most (a GGUF dequantised to float16), never this.
_DEFAULT_FILE_BYTES = 16 << 30
# Callers queued behind the running child, and how long each may wait for its turn (see the module docstring).
_MAX_WAITING = 4
_MAX_WAIT_S = 600.0
_BUSY = "the server is busy converting other models; try again shortly"


class _Turns:
    """One child at a time; at most ``waiting`` callers queued behind it, each for at most ``wait_s``."""

    def __init__(self, *, waiting: int) -> None:
        self._running = threading.Lock()
        self._places = threading.BoundedSemaphore(waiting + 1)  # the running child's, and the queue's

    @contextmanager
    def turn(self, wait_s: float) -> Iterator[None]:
        """Hold the turn while the block runs; Unavailable at once when the queue is full, or after ``wait_s``."""
        if not self._places.acquire(blocking=False):
            raise Unavailable(_BUSY)
        try:
            if not self._running.acquire(timeout=wait_s):
                raise Unavailable(_BUSY)
            try:
                yield
            finally:
                self._running.release()
        finally:
            self._places.release()


# A conversion holds a model in torch (1-2 GB for a small LM): imports arriving together take turns.
_TURNS = _Turns(waiting=_MAX_WAITING)


@dataclass(frozen=True)
class ChildLimits:
    """Wall-clock seconds, memory (bytes of address space beyond the reserve) and the largest file one child may
    use and write."""

    timeout_s: float
    memory_bytes: int
    max_file_bytes: int = _DEFAULT_FILE_BYTES

    @classmethod
    def for_model(cls, model_bytes: int, *, timeout_s: float) -> ChildLimits:
        """Room for a float32 copy of the weights, the file's own mapping and the work of one tiny forward pass;
        files up to ten times the weights (a dequantised conversion), at least the default."""
        return cls(
            timeout_s=timeout_s,
            memory_bytes=max(2 << 30, 4 * model_bytes),
            max_file_bytes=max(_DEFAULT_FILE_BYTES, 10 * model_bytes),
        )


# The limits are set by the child itself, first thing, before the module runs: ``preexec_fn`` is unsafe in
# a parent that has threads (the API process has many). A write past RLIMIT_FSIZE kills the child (SIGXFSZ,
# which Python ignores by default: a library catching the OSError would otherwise hide why it failed).
_BOOTSTRAP = (
    "import resource, runpy, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
    "limit, files = int(sys.argv[1]), int(sys.argv[2])\n"
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "module = sys.argv[3]\n"
    "sys.argv = [module, *sys.argv[4:]]\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def _environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in _KEPT_ENVIRONMENT if name in os.environ}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """Kill the child and everything it started (its session's process group), if any of it is left."""
    with suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def _run(command: list[str], out: Path, timeout_s: float) -> tuple[int, bytes]:
    """The child's exit status and the end of its stderr; TimeoutExpired (the group killed) past ``timeout_s``.

    stderr goes to a file, not a pipe: a child printing without end would otherwise grow the server's memory."""
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=out,
            env=_environment(),
            start_new_session=True,  # its own process group: killed whole, grandchildren too
        )
        try:
            child.wait(timeout=timeout_s)
        finally:
            _kill_group(child)  # past the limit, or what the child left running when it exited
            child.wait()  # reaped
        stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - _STDERR_TAIL_BYTES))
        return child.returncode, stderr.read()


def run_child(module: str, args: list[str], out: Path, *, limits: ChildLimits, what: str) -> dict[str, Any]:
    """Run ``python -m module *args out`` and return its report; InvalidInput when the model is refused.

    ``what`` names the step in messages ("converting the model", "loading the model"). Unavailable when other
    imports hold the children's queue (see the module docstring).
    """
    out.mkdir(parents=True, exist_ok=True)
    address_space = limits.memory_bytes + _RESERVED_ADDRESS_SPACE
    bounds = [str(address_space), str(limits.max_file_bytes)]
    command = [sys.executable, "-P", "-c", _BOOTSTRAP, *bounds, module, *args, str(out)]
    try:
        with _TURNS.turn(_MAX_WAIT_S):  # the wait for a turn is not the child's time: its clock starts here
            returncode, stderr = _run(command, out, limits.timeout_s)
    except subprocess.TimeoutExpired:
        raise InvalidInput(f"{what} took longer than {limits.timeout_s:.0f} s; it was abandoned") from None
    report_path = out / REPORT
    if not report_path.exists():
        if returncode == -signal.SIGXFSZ:
            raise InvalidInput(
                f"{what} wrote a file larger than {limits.max_file_bytes // (1 << 20):,} MiB; it was refused"
            )
        # Killed by the memory limit (or a crash in a native library on this model's data): the model's fault.
        if returncode < 0 or b"MemoryError" in stderr or b"bad_alloc" in stderr:
            raise InvalidInput(
                f"{what} needed more than {limits.memory_bytes // (1 << 20):,} MiB of memory or crashed; it was refused"
            )
        raise InvalidInput(f"{what} failed (the loader exited with status {returncode})")
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    report_path.unlink()
    if "error" in report:
        raise InvalidInput(str(report["error"]))
    return report
