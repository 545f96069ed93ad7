"""Per-epoch training checkpoints in safe formats (DESIGN decisions 5 and 6): no pickle, no ``torch.save``.

A checkpoint directory holds::

    epoch-000007.safetensors   tensors: "model.<name>", "best.<name>", "optimizer.<param>.<key>"
    checkpoint.json            {"format", "version", "tensors": "epoch-000007.safetensors", "state": {...}}

The tensors file of an epoch is written under a temporary name and renamed into place, then
``checkpoint.json`` is replaced atomically: that rename is the commit point, so a crash at any moment leaves
the previous checkpoint readable. Older tensor files are removed afterwards.
"""

from __future__ import annotations

import copy
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from maas.errors import Conflict

FORMAT = "maas.checkpoint"
VERSION = 1
POINTER = "checkpoint.json"
_SCALAR_TYPES = (bool, int, float, str, type(None))


@dataclass
class TrainerState:
    """Everything but tensors that a resumed run needs. ``epoch`` counts finished epochs."""

    fingerprint: str
    epoch: int = 0
    best_val_loss: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    elapsed_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Checkpoint:
    state: TrainerState
    model: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    optimizer_state: dict[int, dict[str, Any]]


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, allow_nan=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    directory: Path,
    *,
    state: TrainerState,
    model: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor] | None,
    optimizer_state: dict[int, dict[str, Any]],
) -> None:
    """Write one epoch's checkpoint atomically into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().contiguous() for k, v in model.items()}
    if best is not None:
        tensors.update({f"best.{k}": v.detach().contiguous() for k, v in best.items()})
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in optimizer_state.items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().contiguous()
            elif isinstance(value, _SCALAR_TYPES):
                scalars.setdefault(str(index), {})[key] = value
            else:
                raise TypeError(f"optimizer state {key!r} of type {type(value).__name__} cannot be saved")
    name = f"epoch-{state.epoch:06d}.safetensors"
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    save_file(tensors, str(tmp))
    _fsync_file(tmp)
    os.replace(tmp, directory / name)
    _write_json_atomic(
        directory / POINTER,
        {
            "format": FORMAT,
            "version": VERSION,
            "tensors": name,
            "has_best": best is not None,
            "optimizer_scalars": scalars,
            "state": asdict(state),
        },
    )
    for old in directory.glob("epoch-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


class BackgroundCheckpointWriter:
    """Writes checkpoints on a background thread so the disk (and its fsync) never holds up training.

    ``save`` copies the tensors (a memory copy: microseconds to milliseconds) and hands the write to the
    thread, after waiting for the previous one: writes happen in order and at most one is in flight. A
    process that dies mid-write leaves the previous checkpoint in place (each write is atomic), so a resume
    loses at most the epoch whose write was in flight. ``flush`` waits for the pending write and raises
    its error, if any; call it before the training function returns or raises."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._pending: Future[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maas-checkpoint")

    def save(
        self,
        *,
        state: TrainerState,
        model: dict[str, torch.Tensor],
        best: dict[str, torch.Tensor] | None,
        optimizer_state: dict[int, dict[str, Any]],
    ) -> None:
        self.flush()
        # Training goes on mutating the weights and the optimizer's moments in place: write copies.
        model_copy = {name: tensor.detach().clone() for name, tensor in model.items()}
        optimizer_copy = {
            index: {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in entries.items()}
            for index, entries in optimizer_state.items()
        }
        self._pending = self._executor.submit(
            save_checkpoint,
            self._directory,
            state=copy.deepcopy(state),
            model=model_copy,
            best=best,  # snapshots: never mutated once taken
            optimizer_state=optimizer_copy,
        )

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._executor.shutdown(wait=True)


def load_checkpoint(directory: Path, *, fingerprint: str) -> Checkpoint | None:
    """The latest checkpoint in ``directory``, or None when there is none.

    Raises Conflict when it was written for another configuration (``fingerprint`` differs)."""
    pointer = directory / POINTER
    if not pointer.is_file():
        return None
    meta = json.loads(pointer.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise Conflict(f"{pointer} is not a {FORMAT} version {VERSION} file")
    state = TrainerState(**meta["state"])
    if state.fingerprint != fingerprint:
        raise Conflict(
            f"the checkpoint in {directory} was written for a different model or data; "
            "use an empty checkpoint directory"
        )
    tensors = load_file(str(directory / meta["tensors"]))
    model: dict[str, torch.Tensor] = {}
    best: dict[str, torch.Tensor] = {}
    optimizer_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        group, _, rest = key.partition(".")
        if group == "model":
            model[rest] = value
        elif group == "best":
            best[rest] = value
        elif group == "optimizer":
            index, _, name = rest.partition(".")
            optimizer_state.setdefault(int(index), {})[name] = value
    for index, entries in meta["optimizer_scalars"].items():
        optimizer_state.setdefault(int(index), {}).update(entries)
    return Checkpoint(
        state=state, model=model, best=best if meta["has_best"] else None, optimizer_state=optimizer_state
    )


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The weights a finished run ends with (the best ones when early stopping kept them), without the
    fingerprint check; for inspection and tests."""
    meta = json.loads((directory / POINTER).read_text(encoding="utf-8"))
    tensors = load_file(str(directory / meta["tensors"]))
    group = "best." if meta["has_best"] else "model."
    return {key[len(group) :]: value for key, value in tensors.items() if key.startswith(group)}
