"""What every import child process does first (``import_convert``, ``load_check``, ``import_onnx``,
``import_file_check``), before reading a model file.

- It stops when the process that started it is gone (``maas up`` stopped): nobody would read its report.
- It makes unpickling impossible: ``torch.load`` and ``pickle`` raise. The platform never loads a pickle; the
  checks on file names and shard maps keep every loader away from one, and this makes a path we missed fail
  loudly (the model is refused) instead of running a tenant's pickle. A child that has no use for torch (the
  ONNX and file checks) does not import it to disarm it: it makes torch impossible to import instead.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from typing import Any, NoReturn


class UnpicklingRefused(RuntimeError):
    """Something tried to unpickle a file while an imported model was loaded."""


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise UnpicklingRefused("a loader tried to unpickle a model file; pickles are never loaded here")


class _RefusingUnpickler(pickle.Unpickler):
    """Libraries subclass ``pickle.Unpickler`` as they are imported: this one can be subclassed, never made."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        _refuse()


def forbid_unpickling(*, without_torch: bool = False) -> None:
    """Replace every unpickling entry point of this process (a child's: the server's own are untouched).

    ``without_torch``: torch (an optional dependency, seconds to import) cannot be imported at all from now on,
    unless it already was, in which case it is disarmed like in any other child.
    """
    if without_torch and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # Python's mark for "import of torch halted"
    else:
        import torch  # before pickle is replaced: torch subclasses its classes as it is imported
        import torch.serialization

        torch.load = _refuse
        torch.serialization.load = _refuse
    pickle.load = _refuse
    pickle.loads = _refuse
    pickle.Unpickler = _RefusingUnpickler  # type: ignore[misc]  # the class replaced by a refusing one


def exit_with_parent() -> None:
    """Exit when the parent process is gone."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
