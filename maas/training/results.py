"""What every family's trainer takes and gives back: the contract between jobs and trainers.

A trainer is a function ``train(data, spec, checkpoint_dir, on_epoch, should_stop) -> TrainedModel``:

- ``data`` is the dataset version's stored bytes (:class:`TrainingData`);
- ``spec`` is the job spec written at submit time: ``target``, ``task``, ``roles`` (role -> column),
  ``plan`` (the family's extra facts), ``hyperparameters`` (already validated), ``column_types``; when the
  plan names a ``base_model``, also ``base_model`` ({name, version, model_version_id, family}) and
  ``base_model_files`` (name -> digest, read with ``data.fetch``);
- checkpoints go to ``checkpoint_dir``; a later call with the same directory resumes;
- ``on_epoch`` receives an :class:`EpochReport` after each epoch; ``should_stop()`` True means cancel
  (raise :class:`maas.training.trainer.TrainingCancelled`);
- bad data or a spec that cannot train raises ``maas.errors.InvalidInput`` (the job fails with its text).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from maas.data.formats import load_frame

ArtifactFormat = Literal["onnx", "safetensors"]


@dataclass(frozen=True)
class TrainingData:
    kind: str  # "tabular" or "images"
    format: str
    content: bytes
    # Reads another blob by digest (checked): a fine-tune's base model files, named in spec["base_model_files"].
    fetch: Callable[[str], bytes] | None = None

    def frame(self) -> pd.DataFrame:
        """The table of a tabular dataset, as profiled at upload."""
        return load_frame(self.content, self.format)


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float | None
    train_metrics: dict[str, float]
    val_metrics: dict[str, float]
    progress: float
    eta_seconds: float
    elapsed_seconds: float


@dataclass(frozen=True)
class TrainedModel:
    artifact: bytes  # ONNX bytes, or safetensors bytes where ONNX cannot serve the model well
    artifact_format: ArtifactFormat
    preprocessing: dict[str, Any]  # JSON the serving runtime needs besides the artifact (tokenizer, ids...)
    signature: dict[str, Any]  # inputs, outputs, task; shown to users
    metrics: dict[str, Any]  # on the held-out test split
    hyperparameters: dict[str, Any]  # as trained, defaults resolved
    task: str
    epochs_run: int
    # More files of the version, by name (an HF-style directory); stored as blobs beside ``artifact``.
    files: dict[str, bytes] = field(default_factory=dict)


Trainer = Callable[
    [TrainingData, dict[str, Any], Path, Callable[[EpochReport], None], Callable[[], bool]], TrainedModel
]
