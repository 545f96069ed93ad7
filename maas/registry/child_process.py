"""Run one step of an import (a conversion, a load check) in a child process under time and memory limits.

An imported model is a tenant's file: loading it may allocate without bound (a graph that expands a
constant to gigabytes, a config that asks for a vocabulary of billions) or spin. Nothing of that may
happen in the API process, so every load of an imported model's weights before it is registered runs
here: ``python -m <module> <args...> <out>``, with

- an address-space limit (``RLIMIT_AS``): an allocation past it fails inside the child, which reports a
  ``MemoryError`` or dies; either way the import is refused, the server keeps its memory;
- a wall-clock limit: past it the child is killed and the import refused;
- no inherited secrets: the environment is reduced to what Python and the libraries need (no
  ``MAAS_ADMIN_KEY``, no database URL), and the working directory is the child's own output folder, so a
  relative path inside a model file resolves to nothing of the server's.

The child writes ``report.json`` into ``out``: a JSON object, with ``error`` set when the model is refused
(the message becomes the import's 422 detail, and must already be free of server paths).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maas.errors import InvalidInput

REPORT = "report.json"
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
# One child at a time: a conversion holds a model in torch (1-2 GB for a small LM); imports arriving
# together queue here rather than each starting a child at once.
_ONE_AT_A_TIME = threading.Lock()


@dataclass(frozen=True)
class ChildLimits:
    """Wall-clock seconds and memory (bytes of address space beyond the reserve) one child may use."""

    timeout_s: float
    memory_bytes: int

    @classmethod
    def for_model(cls, model_bytes: int, *, timeout_s: float) -> ChildLimits:
        """Room for a float32 copy of the weights, the file's own mapping and the work of one tiny forward pass."""
        return cls(timeout_s=timeout_s, memory_bytes=max(2 << 30, 4 * model_bytes))


# The limits are set by the child itself, first thing, before the module runs: ``preexec_fn`` is unsafe in
# a parent that has threads (the API process has many).
_BOOTSTRAP = (
    "import resource, runpy, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "module = sys.argv[2]\n"
    "sys.argv = [module, *sys.argv[3:]]\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def _environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in _KEPT_ENVIRONMENT if name in os.environ}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def run_child(module: str, args: list[str], out: Path, *, limits: ChildLimits, what: str) -> dict[str, Any]:
    """Run ``python -m module *args out`` and return its report; InvalidInput when the model is refused.

    ``what`` names the step in messages ("converting the model", "loading the model").
    """
    out.mkdir(parents=True, exist_ok=True)
    address_space = limits.memory_bytes + _RESERVED_ADDRESS_SPACE
    command = [sys.executable, "-P", "-c", _BOOTSTRAP, str(address_space), module, *args, str(out)]
    try:
        with _ONE_AT_A_TIME:
            completed = subprocess.run(
                command,
                capture_output=True,
                timeout=limits.timeout_s,
                check=False,
                cwd=out,
                env=_environment(),
            )
    except subprocess.TimeoutExpired:
        raise InvalidInput(f"{what} took longer than {limits.timeout_s:.0f} s; it was abandoned") from None
    report_path = out / REPORT
    if not report_path.exists():
        # Killed by the memory limit (or a crash in a native library on this model's data): the model's fault.
        if completed.returncode < 0 or b"MemoryError" in completed.stderr or b"bad_alloc" in completed.stderr:
            raise InvalidInput(
                f"{what} needed more than {limits.memory_bytes // (1 << 20):,} MiB of memory or crashed; it was refused"
            )
        raise InvalidInput(f"{what} failed (the loader exited with status {completed.returncode})")
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    report_path.unlink()
    if "error" in report:
        raise InvalidInput(str(report["error"]))
    return report
