"""Train a ``tabular-mlp`` model on a DataFrame: validate, split, preprocess, train, evaluate, export.

:func:`train_tabular` is what a training job calls. Checkpoints go to ``checkpoint_dir`` after every epoch
and a later call with the same directory, data and spec resumes where the last one stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from maas.data.labels import LabelEncoder
from maas.data.preprocessing import TabularPreprocessor
from maas.errors import InvalidInput
from maas.models.tabular_mlp import TabularMLPHyperparameters, infer_task
from maas.models.tabular_mlp_net import build_network
from maas.training import metrics
from maas.training.onnx_export import export_onnx, output_name, serving_module, verify_onnx
from maas.training.results import EpochReport, TrainedModel, TrainingData
from maas.training.splits import Split, split_indices
from maas.training.trainer import EpochStats, LossFn, Trainer, TrainerConfig, TrainingCancelled, fingerprint

__all__ = [
    "EpochReport",
    "TabularTrainSpec",
    "TrainedTabularModel",
    "TrainingCancelled",
    "train_job",
    "train_tabular",
]

Task = Literal["classification", "regression"]
MAX_CLASSES = 1000


@dataclass(frozen=True)
class TabularTrainSpec:
    target: str
    task: Task | None
    hyperparameters: TabularMLPHyperparameters
    column_types: dict[str, str]  # from the dataset profile; columns left out get a type from their dtype


@dataclass(frozen=True)
class TrainedTabularModel:
    onnx_bytes: bytes
    preprocessing: dict[str, Any]  # TabularPreprocessor.to_json()
    signature: dict[str, Any]
    metrics: dict[str, Any]
    hyperparameters: dict[str, Any]  # as trained, with the loss resolved
    task: str
    epochs_run: int


@dataclass(frozen=True)
class _Target:
    task: Task
    values: np.ndarray  # class indices (int64) or float64 target values
    encoder: LabelEncoder | None


def _target_profile(series: pd.Series, declared: str | None) -> dict[str, Any]:
    numeric = pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)
    column_type = declared or ("numeric" if numeric else "categorical")
    profile: dict[str, Any] = {"name": series.name, "type": column_type, "unique": int(series.nunique())}
    if numeric:
        values = series.to_numpy(dtype="float64")
        profile["integer"] = bool(np.all(np.mod(values, 1) == 0))
    return profile


def _prepare_target(frame: pd.DataFrame, spec: TabularTrainSpec) -> _Target:
    series = frame[spec.target]
    task = spec.task or infer_task(_target_profile(series, spec.column_types.get(spec.target)))
    if task == "regression":
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        if np.isnan(values).any() or not np.isfinite(values).all():
            raise InvalidInput(
                f"target '{spec.target}' must be numeric for regression; some values are not numbers",
                errors=[{"loc": ["target"], "msg": "non-numeric value in a regression target"}],
            )
        return _Target(task=task, values=values, encoder=None)
    encoder = LabelEncoder.fit(series.tolist())
    if len(encoder.classes) < 2:
        raise InvalidInput(
            f"target '{spec.target}' has {len(encoder.classes)} class; classification needs at least 2",
            errors=[{"loc": ["target"], "msg": "fewer than 2 classes"}],
        )
    if len(encoder.classes) > MAX_CLASSES:
        raise InvalidInput(
            f"target '{spec.target}' has {len(encoder.classes)} classes; at most {MAX_CLASSES} are supported "
            "(is it a regression target?)",
            errors=[{"loc": ["target"], "msg": "too many classes"}],
        )
    return _Target(task=task, values=encoder.encode(series.tolist()), encoder=encoder)


def _validated_frame(frame: pd.DataFrame, spec: TabularTrainSpec) -> tuple[pd.DataFrame, list[str]]:
    if spec.target not in frame.columns:
        raise InvalidInput(
            f"target column '{spec.target}' is not in the dataset (columns: {', '.join(map(str, frame.columns))})",
            errors=[{"loc": ["target"], "msg": "no such column"}],
        )
    features = [str(name) for name in frame.columns if name != spec.target]
    if not features:
        raise InvalidInput("the dataset has no feature columns besides the target")
    kept = frame[frame[spec.target].notna()].reset_index(drop=True)
    if len(kept) < 4:
        raise InvalidInput(f"only {len(kept)} rows have a value for target '{spec.target}'; at least 4 are needed")
    return kept, features


def _loss_fn(loss: str, n_classes: int) -> tuple[LossFn, int]:
    """Loss function and the network's number of outputs."""
    if loss == "binary_cross_entropy":
        bce = nn.BCEWithLogitsLoss()
        return (lambda out, y: bce(out[:, 0], y.to(out.dtype))), 1
    if loss == "categorical_cross_entropy":
        return nn.CrossEntropyLoss(), n_classes
    module: nn.Module = {"mse": nn.MSELoss(), "mae": nn.L1Loss(), "huber": nn.HuberLoss()}[loss]
    return (lambda out, y: module(out[:, 0], y)), 1


class _Progress:
    """Turns the trainer's raw epoch outputs into EpochReports with task metrics."""

    def __init__(self, target: _Target, y_train: np.ndarray, y_val: np.ndarray, scale: tuple[float, float]) -> None:
        self.target = target
        self.y_train = y_train
        self.y_val = y_val
        self.mean, self.std = scale

    def _metrics(self, outputs: torch.Tensor | None, labels: np.ndarray) -> dict[str, float]:
        if outputs is None or len(labels) == 0:
            return {}
        out = outputs.detach().numpy()
        if self.target.task == "classification":
            # argmax of logits = argmax of probabilities; one logit: positive when > 0
            scores = np.concatenate([-out, out], axis=1) if out.shape[1] == 1 else out
            return {"accuracy": metrics.accuracy(scores, labels)}
        return metrics.regression_errors(out[:, 0] * self.std + self.mean, labels)

    def report(self, stats: EpochStats) -> EpochReport:
        return EpochReport(
            epoch=stats.epoch,
            epochs=stats.epochs,
            train_loss=stats.train_loss,
            val_loss=stats.val_loss,
            train_metrics=self._metrics(stats.train_outputs, self.y_train),
            val_metrics=self._metrics(stats.val_outputs, self.y_val),
            progress=stats.epoch / stats.epochs,
            eta_seconds=stats.eta_seconds,
            elapsed_seconds=stats.elapsed_seconds,
        )


def _tensor_target(values: np.ndarray, task: Task, mean: float, std: float) -> torch.Tensor:
    if task == "classification":
        return torch.from_numpy(values.astype(np.int64))
    return torch.from_numpy(((values - mean) / std).astype(np.float32))


def _split(target: _Target, hp: TabularMLPHyperparameters) -> Split:
    split = split_indices(
        len(target.values),
        test_fraction=hp.test_split,
        validation_fraction=hp.validation_split,
        seed=hp.seed,
        strata=target.values if target.task == "classification" else None,
    )
    if len(split.train) < 2 or len(split.test) < 1:
        raise InvalidInput("too few rows to split into training and test sets")
    return split


def train_tabular(
    frame: pd.DataFrame,
    spec: TabularTrainSpec,
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochReport], None],
    should_stop: Callable[[], bool],
) -> TrainedTabularModel:
    """Train, evaluate on the held-out test split and export to ONNX; see the module docstring.

    Raises InvalidInput for an unusable target or spec, TrainingCancelled when ``should_stop()`` says so."""
    started = time.monotonic()
    hp = spec.hyperparameters
    frame, features = _validated_frame(frame, spec)
    target = _prepare_target(frame, spec)
    n_classes = len(target.encoder.classes) if target.encoder else 0
    loss_name = hp.resolve_loss(target.task, n_classes)
    split = _split(target, hp)

    preprocessor = TabularPreprocessor.fit(frame.iloc[split.train], features, spec.column_types)
    matrix = preprocessor.transform_frame(frame)
    y_train = target.values[split.train]
    mean, std = 0.0, 1.0
    if target.task == "regression":
        mean, std = float(y_train.mean()), float(y_train.std())
        std = std if math.isfinite(std) and std > 1e-12 else 1.0

    loss_fn, n_outputs = _loss_fn(loss_name, n_classes)
    network = build_network(preprocessor.n_features, n_outputs, hp)
    trainer = Trainer(
        network,
        loss_fn,
        TrainerConfig(
            epochs=hp.epochs,
            batch_size=hp.batch_size,
            optimizer=hp.optimizer,
            learning_rate=hp.learning_rate,
            momentum=hp.momentum,
            l1=hp.l1,
            l2=hp.l2,
            patience=hp.early_stopping_patience if len(split.validation) else 0,
            seed=hp.seed,
        ),
    )

    def tensors(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        features_tensor = torch.from_numpy(matrix[rows])
        return features_tensor, _tensor_target(target.values[rows], target.task, mean, std)

    progress = _Progress(target, y_train, target.values[split.validation], (mean, std))
    run_key = fingerprint(
        "tabular",
        spec.target,
        target.task,
        loss_name,
        preprocessor.to_json(),
        split.train.tolist(),
        float(np.sum(matrix, dtype=np.float64)),
    )
    fit = trainer.fit(
        tensors(split.train),
        tensors(split.validation) if len(split.validation) else None,
        checkpoint_dir=checkpoint_dir,
        on_epoch=lambda stats: on_epoch(progress.report(stats)),
        should_stop=should_stop,
        run_key=run_key,
    )

    module = serving_module(network, target.task, single_logit=n_outputs == 1, target_mean=mean, target_std=std)
    onnx_bytes = export_onnx(module, preprocessor.n_features, output_name(target.task))
    outputs = verify_onnx(module, onnx_bytes, matrix[split.test])
    y_test = target.values[split.test]
    if target.encoder is not None:
        test_metrics = metrics.classification_report(outputs, y_test, target.encoder.classes)
    else:
        test_metrics = metrics.regression_report(outputs, y_test)
    test_metrics.update(
        train_rows=len(split.train),
        validation_rows=len(split.validation),
        test_rows=len(split.test),
        epochs_run=fit.epochs_run,
        best_epoch=fit.best_epoch,
        stopped_early=fit.stopped_early,
        best_val_loss=fit.best_val_loss,
        training_seconds=fit.elapsed_seconds,
        total_seconds=time.monotonic() - started,
    )
    signature: dict[str, Any] = {
        "inputs": preprocessor.input_schema(),
        "outputs": [
            {"name": output_name(target.task), "type": "float32", "shape": [-1, n_classes]}
            if target.encoder is not None
            else {"name": output_name(target.task), "type": "float32", "shape": [-1]}
        ],
        "task": target.task,
        "target": spec.target,
        "onnx_input": "features",
        "onnx_output": output_name(target.task),
    }
    if target.encoder is not None:
        signature["classes"] = list(target.encoder.classes)
    else:  # informational: the ONNX output is already in target units
        signature["target_scaling"] = {"mean": mean, "std": std}
    return TrainedTabularModel(
        onnx_bytes=onnx_bytes,
        preprocessing=preprocessor.to_json(),
        signature=signature,
        metrics=test_metrics,
        hyperparameters={**hp.model_dump(mode="json"), "loss": loss_name},
        task=target.task,
        epochs_run=fit.epochs_run,
    )


def train_job(
    data: TrainingData,
    spec: dict[str, Any],
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochReport], None],
    should_stop: Callable[[], bool],
) -> TrainedModel:
    """The job entry point (:data:`maas.training.registry.TRAINERS`)."""
    train_spec = TabularTrainSpec(
        target=spec["target"],
        task=spec["task"],
        hyperparameters=TabularMLPHyperparameters.model_validate(spec["hyperparameters"]),
        column_types=spec["column_types"],
    )
    trained = train_tabular(data.frame(), train_spec, checkpoint_dir, on_epoch, should_stop)
    return TrainedModel(
        artifact=trained.onnx_bytes,
        artifact_format="onnx",
        preprocessing=trained.preprocessing,
        signature=trained.signature,
        metrics=trained.metrics,
        hyperparameters=trained.hyperparameters,
        task=trained.task,
        epochs_run=trained.epochs_run,
    )
