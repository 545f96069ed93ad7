"""Train a ``recommender-mf`` model: read interactions, split, fit through the generic trainer, evaluate, export.

:func:`train_job` is what a training job calls. The held-out test split is a uniform random share of the
interactions (``test_split``), the protocol of the rating-prediction literature and of Surprise's
benchmarks; users and items that appear only in it are unknown to the model and get the baseline
prediction (global mean plus the known bias), as Surprise does.

Ranking metrics (k = ``eval_k``) rank every known item but the user's training interactions. Relevant
held-out items are all of them for the ranking task and, for the rating task, those rated in the top
quarter of the rating scale (4 and 5 on a 1-5 scale). The same metrics of a popularity ranking are
reported beside them as a baseline.

The artifact is safetensors (numpy arrays: factors, biases, global mean, and each user's interacted items
as CSR ``seen_indptr``/``seen_indices``); the id lists and the popularity order are JSON preprocessing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import save as save_safetensors

from maas.errors import InvalidInput
from maas.models.recommender_mf import RecommenderHyperparameters, parse_hyperparameters
from maas.models.recommender_mf_net import BPRMF, BiasedMF, bpr_loss, build_network, rating_loss
from maas.training.ranking_metrics import csr_from_pairs, ranking_report
from maas.training.results import EpochReport, TrainedModel, TrainingData
from maas.training.splits import split_indices
from maas.training.trainer import EpochStats, FitResult, Trainer, TrainerConfig, fingerprint

__all__ = ["FittedRecommender", "evaluate", "fit_recommender", "read_interactions", "train_job"]

MAX_SERVING_K = 100
# Relevant held-out ratings for the ranking metrics of the rating task: the top quarter of the scale.
RELEVANT_QUANTILE_OF_SCALE = 0.75


@dataclass(frozen=True)
class Interactions:
    """An interactions table with ids as strings (ids may be ints or strings: "7" matches 7 and "7")."""

    users: np.ndarray  # str
    items: np.ndarray  # str
    ratings: np.ndarray | None  # float64, rating task only
    user_id_type: str  # "int" or "str": how the table had them, so answers give them back alike
    item_id_type: str

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, rows: np.ndarray) -> Interactions:
        ratings = None if self.ratings is None else self.ratings[rows]
        return Interactions(self.users[rows], self.items[rows], ratings, self.user_id_type, self.item_id_type)


def _rows(mask: np.ndarray) -> str:
    rows = (np.flatnonzero(mask)[:5] + 1).tolist()
    more = " ..." if int(mask.sum()) > 5 else ""
    return ", ".join(map(str, rows)) + more


def _ids(frame: pd.DataFrame, column: str, role: str) -> tuple[np.ndarray, str]:
    series = frame[column]
    missing = series.isna().to_numpy()
    if missing.any():
        raise InvalidInput(
            f"{role} column '{column}' is empty in {int(missing.sum())} rows (rows {_rows(missing)}); "
            "every interaction needs a user and an item",
            errors=[{"loc": ["columns", role], "msg": "missing values"}],
        )
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype(str).to_numpy(dtype=str), "str"
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64).astype(str), "int"
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64)
        if np.all(np.isfinite(values)) and np.all(np.mod(values, 1) == 0):
            return values.astype(np.int64).astype(str), "int"
    return np.array([str(value) for value in series.tolist()], dtype=str), "str"


def read_interactions(frame: pd.DataFrame, roles: dict[str, str], task: str) -> Interactions:
    """The user, item (and, for the rating task, rating) columns of ``frame``; InvalidInput names what is
    wrong: a missing column, empty ids, ratings that are not numbers."""
    for role in ("user", "item") + (("rating",) if task == "rating" else ()):
        column = roles.get(role)
        if column is None or column not in frame.columns:
            raise InvalidInput(
                f"the {role} column {repr(column) if column else ''} is not in the table (columns: "
                f'{", ".join(map(str, frame.columns))}); send "columns": {{"{role}": "<column>"}}',
                errors=[{"loc": ["columns", role], "msg": "no such column"}],
            )
    if len(frame) < 10:
        raise InvalidInput(f"the table has {len(frame)} interactions; recommender-mf needs at least 10")
    users, user_type = _ids(frame, roles["user"], "user")
    items, item_type = _ids(frame, roles["item"], "item")
    ratings = None
    if task == "rating":
        values = pd.to_numeric(frame[roles["rating"]], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            raise InvalidInput(
                f"rating column '{roles['rating']}' has {int(bad.sum())} values that are not numbers "
                f'(rows {_rows(bad)}); fix or drop those rows, or train with "task": "ranking"',
                errors=[{"loc": ["columns", "rating"], "msg": "non-numeric ratings"}],
            )
        ratings = values
    return Interactions(users, items, ratings, user_type, item_type)


@dataclass(frozen=True)
class FittedRecommender:
    """A trained model as numpy arrays, with the id lists that index them."""

    task: str
    user_ids: np.ndarray  # str, sorted; row i of user_factors belongs to user_ids[i]
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    global_mean: float
    rating_range: tuple[float, float] | None
    popularity: np.ndarray  # item indices, most interacted first (training interactions)
    fit: FitResult

    def index(self, ids: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Positions of ``ids`` in ``known`` (sorted), -1 where absent."""
        position = np.searchsorted(known, ids)
        position = np.minimum(position, len(known) - 1)
        return np.where(known[position] == ids, position, -1)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings (or scores) for index pairs; -1 (unknown) contributes no bias and no factors."""
        known_user, known_item = users >= 0, items >= 0
        out = np.full(len(users), self.global_mean, dtype=np.float64)
        out += np.where(known_user, self.user_bias[np.maximum(users, 0)], 0.0)
        out += np.where(known_item, self.item_bias[np.maximum(items, 0)], 0.0)
        both = known_user & known_item
        out[both] += np.einsum("ij,ij->i", self.user_factors[users[both]], self.item_factors[items[both]])
        if self.rating_range is not None:
            out = np.clip(out, *self.rating_range)
        return out

    def score_block(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for ``users`` (the user bias and global mean do not change a ranking)."""
        scores: np.ndarray = self.user_factors[users] @ self.item_factors.T + self.item_bias[None, :]
        return scores


def _validation_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if fraction <= 0 or n < 20:
        return np.arange(n), np.arange(0)
    order = np.random.default_rng(seed + 1).permutation(n)
    n_val = round(n * fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class _NegativeSampler:
    """The trainer's batch transform for BPR: column 2 of each (user, positive, ·) row becomes an item the
    user did not interact with, drawn uniformly; a draw that hits a positive is redrawn once (rare misses
    are tolerated, as in the original BPR)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int) -> None:
        self.n_items = n_items
        self.positives = torch.from_numpy(np.unique(users.astype(np.int64) * n_items + items))

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        users = batch[:, 0]
        negatives = torch.randint(0, self.n_items, (len(batch),), generator=generator)
        clash = self._positive(users * self.n_items + negatives)
        if bool(clash.any()):
            negatives[clash] = torch.randint(0, self.n_items, (int(clash.sum()),), generator=generator)
        return torch.stack((users, batch[:, 1], negatives), dim=1)

    def _positive(self, keys: torch.Tensor) -> torch.Tensor:
        # A binary search in the sorted keys: torch.isin would sort all of them again on every batch.
        position = torch.searchsorted(self.positives, keys).clamp_(max=len(self.positives) - 1)
        return self.positives[position] == keys


def _progress(task: str, train_targets: np.ndarray, val_targets: np.ndarray) -> Callable[[EpochStats], EpochReport]:
    def metrics(outputs: torch.Tensor | None, targets: np.ndarray) -> dict[str, float]:
        if outputs is None or len(targets) == 0:
            return {}
        column = outputs[:, 0].numpy().astype(np.float64)
        if task == "ranking":  # share of (positive, negative) pairs ordered right: a sampled AUC
            return {"pairwise_accuracy": float(np.mean(column > 0))}
        diff = column - targets
        return {"rmse": float(np.sqrt(np.mean(diff**2))), "mae": float(np.mean(np.abs(diff)))}

    def report(stats: EpochStats) -> EpochReport:
        return EpochReport(
            epoch=stats.epoch,
            epochs=stats.epochs,
            train_loss=stats.train_loss,
            val_loss=stats.val_loss,
            train_metrics=metrics(stats.train_outputs, train_targets),
            val_metrics=metrics(stats.val_outputs, val_targets),
            progress=stats.epoch / stats.epochs,
            eta_seconds=stats.eta_seconds,
            elapsed_seconds=stats.elapsed_seconds,
        )

    return report


def _numpy(table: torch.nn.Embedding) -> np.ndarray:
    return table.weight.detach().numpy().astype(np.float32)


def fit_recommender(
    train: Interactions,
    task: str,
    hp: RecommenderHyperparameters,
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochReport], None],
    should_stop: Callable[[], bool],
) -> FittedRecommender:
    """Fit on ``train`` (a validation share of it drives early stopping); resumes from ``checkpoint_dir``."""
    user_ids, users = np.unique(train.users, return_inverse=True)
    item_ids, items = np.unique(train.items, return_inverse=True)
    users, items = users.astype(np.int64), items.astype(np.int64)
    n_users, n_items = len(user_ids), len(item_ids)
    fit_rows, val_rows = _validation_rows(len(train), hp.validation_split, hp.seed)
    rating = task == "rating"
    if rating:
        assert train.ratings is not None
        targets = train.ratings.astype(np.float32)
        global_mean = float(targets[fit_rows].mean())
        features = np.stack((users, items), axis=1)
    else:
        targets = np.zeros(len(train), dtype=np.float32)
        global_mean = 0.0
        # Validation triples get fixed negatives so that the validation loss is comparable across epochs.
        negatives = np.random.default_rng(hp.seed + 2).integers(0, n_items, len(train))
        features = np.stack((users, items, negatives), axis=1)
    network = build_network(
        task,
        n_users,
        n_items,
        factors=hp.factors,
        init_std=hp.init_std,
        reg=hp.resolved_reg(task),
        bias_reg=hp.bias_reg,
        global_mean=global_mean,
        seed=hp.seed,
    )
    trainer = Trainer(
        network,
        rating_loss if rating else bpr_loss,
        TrainerConfig(
            epochs=hp.epochs,
            batch_size=hp.batch_size,
            optimizer=hp.optimizer,
            learning_rate=hp.resolved_learning_rate(task),
            momentum=hp.momentum,
            patience=hp.early_stopping_patience if len(val_rows) else 0,
            seed=hp.seed,
        ),
        transform=None if rating else _NegativeSampler(users[fit_rows], items[fit_rows], n_items),
    )
    x, y = torch.from_numpy(features), torch.from_numpy(targets)
    report = _progress(task, targets[fit_rows], targets[val_rows])
    run_key = fingerprint("recommender-mf", task, n_users, n_items, float(features.sum()), float(targets.sum()))
    fit = trainer.fit(
        (x[fit_rows], y[fit_rows]),
        (x[val_rows], y[val_rows]) if len(val_rows) else None,
        checkpoint_dir=checkpoint_dir,
        on_epoch=lambda stats: on_epoch(report(stats)),
        should_stop=should_stop,
        run_key=run_key,
    )
    if isinstance(network, BiasedMF):
        user_bias = _numpy(network.user_bias)[:, 0]
    else:
        assert isinstance(network, BPRMF)
        user_bias = np.zeros(n_users, dtype=np.float32)
    rating_range = None
    if rating and train.ratings is not None:
        rating_range = (float(train.ratings.min()), float(train.ratings.max()))
    return FittedRecommender(
        task=task,
        user_ids=user_ids,
        item_ids=item_ids,
        user_factors=_numpy(network.user_factors),
        item_factors=_numpy(network.item_factors),
        user_bias=user_bias,
        item_bias=_numpy(network.item_bias)[:, 0],
        global_mean=global_mean,
        rating_range=rating_range,
        popularity=np.argsort(-np.bincount(items, minlength=n_items), kind="stable"),
        fit=fit,
    )


def _relevant(model: FittedRecommender, test: Interactions) -> tuple[np.ndarray, np.ndarray]:
    users = model.index(test.users, model.user_ids)
    items = model.index(test.items, model.item_ids)
    keep = (users >= 0) & (items >= 0)
    if model.task == "rating" and test.ratings is not None and model.rating_range is not None:
        low, high = model.rating_range
        keep &= test.ratings >= low + RELEVANT_QUANTILE_OF_SCALE * (high - low)
    return csr_from_pairs(users[keep], items[keep], len(model.user_ids), len(model.item_ids))


def evaluate(model: FittedRecommender, train: Interactions, test: Interactions, k: int) -> dict[str, Any]:
    """Test metrics: RMSE/MAE (rating task) and precision/recall/NDCG@k, with a popularity baseline."""
    report: dict[str, Any] = {}
    users = model.index(test.users, model.user_ids)
    items = model.index(test.items, model.item_ids)
    if model.task == "rating" and test.ratings is not None and len(test):
        diff = model.predict(users, items) - test.ratings
        report["rmse"] = float(np.sqrt(np.mean(diff**2)))
        report["mae"] = float(np.mean(np.abs(diff)))
    seen = csr_from_pairs(
        model.index(train.users, model.user_ids), model.index(train.items, model.item_ids), *_shape(model)
    )
    relevant = _relevant(model, test)
    report.update(ranking_report(model.score_block, seen, relevant, k))
    counts = np.zeros(len(model.item_ids))
    counts[model.popularity] = np.arange(len(model.item_ids), 0, -1)
    popular = ranking_report(lambda block: np.tile(counts, (len(block), 1)), seen, relevant, k)
    report["popularity_baseline"] = {name: value for name, value in popular.items() if name != "ranking_users"}
    report["unknown_user_rows"] = int(np.sum(users < 0))
    report["unknown_item_rows"] = int(np.sum(items < 0))
    return report


def _shape(model: FittedRecommender) -> tuple[int, int]:
    return len(model.user_ids), len(model.item_ids)


def export(model: FittedRecommender, everything: Interactions) -> tuple[bytes, dict[str, Any]]:
    """Safetensors bytes and the preprocessing JSON of ``model``. "Seen" and the popularity order cover every
    interaction of the table (the held-out ones too: a user did rate them) between a known user and item."""
    users = model.index(everything.users, model.user_ids)
    items = model.index(everything.items, model.item_ids)
    keep = (users >= 0) & (items >= 0)
    indptr, indices = csr_from_pairs(users[keep], items[keep], *_shape(model))
    tensors = {
        "user_factors": np.ascontiguousarray(model.user_factors),
        "item_factors": np.ascontiguousarray(model.item_factors),
        "user_bias": np.ascontiguousarray(model.user_bias, dtype=np.float32),
        "item_bias": np.ascontiguousarray(model.item_bias, dtype=np.float32),
        "global_mean": np.array([model.global_mean], dtype=np.float32),
        "seen_indptr": indptr.astype(np.int64),
        "seen_indices": indices.astype(np.int32),
    }
    preprocessing = {
        "format": "maas.recommender-mf",
        "version": 1,
        "task": model.task,
        "user_ids": model.user_ids.tolist(),
        "item_ids": model.item_ids.tolist(),
        "user_id_type": everything.user_id_type,
        "item_id_type": everything.item_id_type,
        "popularity": np.argsort(-np.bincount(items[keep], minlength=len(model.item_ids)), kind="stable").tolist(),
        "rating_range": list(model.rating_range) if model.rating_range is not None else None,
        "max_k": MAX_SERVING_K,
    }
    return save_safetensors(tensors), preprocessing


def _signature(model: FittedRecommender, roles: dict[str, str]) -> dict[str, Any]:
    answer = "rating" if model.task == "rating" else "score"
    return {
        "task": model.task,
        "roles": roles,
        "inputs": [
            {"question": answer, "instance": {"user": "<id>", "item": "<id>"}},
            {"question": "top-k items for a user", "instance": {"user": "<id>", "k": 10}},
            {"question": "similar items", "instance": {"item": "<id>", "k": 10}},
        ],
        "outputs": [
            {"question": answer, "prediction": {"user": "<id>", "item": "<id>", answer: "float"}},
            {"question": "top-k", "prediction": {"user": "<id>", "items": [{"item": "<id>", "score": "float"}]}},
            {"question": "similar", "prediction": {"item": "<id>", "similar": [{"item": "<id>", "similarity": 1}]}},
        ],
        "users": len(model.user_ids),
        "items": len(model.item_ids),
        "factors": int(model.item_factors.shape[1]),
        "max_k": MAX_SERVING_K,
    }


def train_job(
    data: TrainingData,
    spec: dict[str, Any],
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochReport], None],
    should_stop: Callable[[], bool],
) -> TrainedModel:
    """The trainer of :data:`maas.training.registry.TRAINERS` (see :mod:`maas.training.results`)."""
    started = time.monotonic()
    hp = parse_hyperparameters(spec.get("hyperparameters"))
    task = str(spec.get("task") or "rating")
    roles = dict(spec.get("roles") or {})
    interactions = read_interactions(data.frame(), roles, task)
    split = split_indices(len(interactions), test_fraction=hp.test_split, validation_fraction=0.0, seed=hp.seed)
    train, test = interactions.subset(split.train), interactions.subset(split.test)
    model = fit_recommender(train, task, hp, checkpoint_dir, on_epoch, should_stop)
    metrics = evaluate(model, train, test, hp.eval_k)
    metrics.update(
        train_rows=len(train),
        test_rows=len(test),
        users=len(model.user_ids),
        items=len(model.item_ids),
        epochs_run=model.fit.epochs_run,
        best_epoch=model.fit.best_epoch,
        stopped_early=model.fit.stopped_early,
        best_val_loss=model.fit.best_val_loss,
        training_seconds=model.fit.elapsed_seconds,
        total_seconds=time.monotonic() - started,
    )
    if not all(math.isfinite(value) for value in (model.global_mean, float(model.item_factors.sum()))):
        raise InvalidInput("training diverged: the factors are not finite; lower learning_rate")
    artifact, preprocessing = export(model, interactions)
    return TrainedModel(
        artifact=artifact,
        artifact_format="safetensors",
        preprocessing=preprocessing,
        signature=_signature(model, roles),
        metrics=metrics,
        hyperparameters={
            **hp.model_dump(mode="json"),
            "reg": hp.resolved_reg(task),
            "learning_rate": hp.resolved_learning_rate(task),
        },
        task=task,
        epochs_run=model.fit.epochs_run,
    )
