"""Deterministic train/validation/test splits (stratified for classification)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def _cut(indices: np.ndarray, test_fraction: float, validation_fraction: float) -> tuple[list[int], ...]:
    n = len(indices)
    n_test = round(n * test_fraction)
    n_val = round(n * validation_fraction)
    if n_test + n_val >= n:  # keep at least one training row
        n_test, n_val = min(n_test, n - 1), max(0, min(n_val, n - 1 - min(n_test, n - 1)))
    test = indices[:n_test].tolist()
    validation = indices[n_test : n_test + n_val].tolist()
    train = indices[n_test + n_val :].tolist()
    return train, validation, test


def split_indices(
    n_rows: int,
    *,
    test_fraction: float,
    validation_fraction: float,
    seed: int,
    strata: np.ndarray | None = None,
) -> Split:
    """Shuffle with ``seed`` and cut; with ``strata`` (class indices) each class is cut separately so the
    three parts keep the class balance. Index arrays are sorted."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n_rows)] if strata is None else [np.flatnonzero(strata == c) for c in np.unique(strata)]
    train: list[int] = []
    validation: list[int] = []
    test: list[int] = []
    for group in groups:
        part_train, part_val, part_test = _cut(rng.permutation(group), test_fraction, validation_fraction)
        train += part_train
        validation += part_val
        test += part_test
    if not test and len(train) > 1:
        test.append(train.pop())
    return Split(
        train=np.sort(np.asarray(train, dtype=np.int64)),
        validation=np.sort(np.asarray(validation, dtype=np.int64)),
        test=np.sort(np.asarray(test, dtype=np.int64)),
    )
