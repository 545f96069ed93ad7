"""Evaluation metrics for the trainer's progress events and the held-out test split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

_EPS = 1e-7


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose most probable class is the label (cheap; for per-epoch progress)."""
    if len(labels) == 0:
        return math.nan
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def regression_errors(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """RMSE and MAE (cheap; for per-epoch progress)."""
    if len(targets) == 0:
        return {}
    diff = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    return {"rmse": float(np.sqrt(np.mean(diff**2))), "mae": float(np.mean(np.abs(diff)))}


def classification_report(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[Any]) -> dict[str, Any]:
    """Test-split metrics: accuracy, macro precision/recall/F1, ROC AUC (binary), log loss, confusion matrix.

    ``probabilities`` is ``[n, n_classes]``; ``labels`` are class indices into ``classes``."""
    n_classes = len(classes)
    predicted = np.argmax(probabilities, axis=1)
    indices = list(range(n_classes))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predicted, labels=indices, average="macro", zero_division=0
    )
    clipped = np.clip(probabilities.astype(np.float64), _EPS, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    report: dict[str, Any] = {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "log_loss": float(skm.log_loss(labels, clipped, labels=indices)),
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=indices).tolist(),
        "labels": list(classes),
    }
    if n_classes == 2:
        has_both = len(np.unique(labels)) == 2
        report["roc_auc"] = float(skm.roc_auc_score(labels, probabilities[:, 1])) if has_both else None
    return report


def regression_report(predictions: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Test-split metrics in target units: RMSE, MAE and R² (None with fewer than 2 rows)."""
    report: dict[str, Any] = regression_errors(predictions, targets)
    report["r2"] = float(skm.r2_score(targets, predictions)) if len(targets) >= 2 else None
    return report
