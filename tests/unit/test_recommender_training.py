"""``recommender-mf`` training: interactions read with clear errors, both tasks trained, metrics, artifact."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load as load_safetensors

from maas.errors import InvalidInput
from maas.training.ranking_metrics import csr_from_pairs, ranking_report
from maas.training.recommender_mf import read_interactions, train_job
from maas.training.results import EpochReport, TrainingData
from maas.training.trainer import TrainingCancelled

ROLES = {"user": "user", "item": "item", "rating": "rating"}
FAST = {"epochs": 40, "batch_size": 64, "learning_rate": 0.01, "factors": 8, "early_stopping_patience": 5}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Small embedding models are fastest on one thread; two threads spin against each other on a busy
    # 2-core box (measured: 4 s on one thread, 177 s on two, for the same run).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ratings_frame(n_users: int = 60, n_items: int = 40, per_user: int = 20, seed: int = 0) -> pd.DataFrame:
    """Ratings from a 3-factor taste model: users "u0".., integer items, 1-5 stars."""
    rng = np.random.default_rng(seed)
    tastes, traits = rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3))
    rows = []
    for user in range(n_users):
        for item in rng.choice(n_items, per_user, replace=False):
            score = 3 + tastes[user] @ traits[item] * 0.8 + rng.normal(scale=0.3)
            rows.append((f"u{user}", int(item) + 100, float(np.clip(np.round(score), 1, 5))))
    return pd.DataFrame(rows, columns=["user", "item", "rating"])


def csv_data(frame: pd.DataFrame) -> TrainingData:
    return TrainingData(kind="tabular", format="csv", content=frame.to_csv(index=False).encode())


def spec(task: str, **hyperparameters: object) -> dict[str, object]:
    roles = ROLES if task == "rating" else {"user": "user", "item": "item"}
    return {"task": task, "roles": roles, "hyperparameters": FAST | hyperparameters}


def test_rating_model_beats_the_mean_and_reports_rating_and_ranking_metrics(tmp_path: Path) -> None:
    frame = ratings_frame()
    reports: list[EpochReport] = []
    trained = train_job(csv_data(frame), spec("rating"), tmp_path, reports.append, lambda: False)
    metrics = trained.metrics
    spread = float(frame["rating"].std())
    assert metrics["rmse"] < 0.85 * spread, (metrics["rmse"], spread)
    assert {"mae", "precision@10", "recall@10", "ndcg@10", "popularity_baseline"} <= set(metrics)
    assert reports and "rmse" in reports[-1].val_metrics and reports[-1].progress <= 1
    assert trained.artifact_format == "safetensors" and trained.task == "rating"
    tensors = load_safetensors(trained.artifact)
    users, items = len(trained.preprocessing["user_ids"]), len(trained.preprocessing["item_ids"])
    assert tensors["user_factors"].shape == (users, 8) and tensors["item_factors"].shape == (items, 8)
    assert tensors["seen_indptr"].shape == (users + 1,) and tensors["seen_indptr"][-1] == len(frame)
    assert trained.preprocessing["item_id_type"] == "int" and trained.preprocessing["user_id_type"] == "str"
    assert trained.preprocessing["rating_range"] == [1.0, 5.0]
    assert all(isinstance(item, str) for item in trained.preprocessing["item_ids"])


def test_ranking_model_trains_on_implicit_interactions(tmp_path: Path) -> None:
    frame = ratings_frame().drop(columns="rating")
    trained = train_job(csv_data(frame), spec("ranking", epochs=10), tmp_path, lambda report: None, lambda: False)
    assert trained.task == "ranking" and "rmse" not in trained.metrics
    assert 0 <= trained.metrics["ndcg@10"] <= 1 and trained.metrics["ranking_users"] > 0
    assert trained.preprocessing["rating_range"] is None


def test_cancelled_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    data, job = csv_data(ratings_frame()), spec("rating", epochs=6, early_stopping_patience=0)
    seen: list[int] = []

    def stop_after_two() -> bool:
        return len(seen) >= 2

    with pytest.raises(TrainingCancelled):
        train_job(data, job, tmp_path, lambda report: seen.append(report.epoch), stop_after_two)
    resumed: list[int] = []
    trained = train_job(data, job, tmp_path, lambda report: resumed.append(report.epoch), lambda: False)
    assert resumed == [3, 4, 5, 6] and trained.epochs_run == 6
    fresh = train_job(data, job, tmp_path / "fresh", lambda report: None, lambda: False)
    assert trained.metrics["rmse"] == pytest.approx(fresh.metrics["rmse"], rel=1e-5)


def test_interaction_tables_with_holes_are_refused_naming_rows() -> None:
    frame = ratings_frame().head(30)
    frame.loc[4, "item"] = None
    with pytest.raises(InvalidInput, match=r"item column 'item' is empty in 1 rows \(rows 5\)"):
        read_interactions(frame, ROLES, "rating")
    frame = ratings_frame().head(30).astype({"rating": object})
    frame.loc[[2, 7], "rating"] = "great"
    with pytest.raises(InvalidInput, match=r"2 values that are not numbers \(rows 3, 8\)"):
        read_interactions(frame, ROLES, "rating")
    with pytest.raises(InvalidInput, match=r"the rating column 'stars' is not in the table"):
        read_interactions(frame, ROLES | {"rating": "stars"}, "rating")


def test_integer_ids_stored_as_floats_keep_their_integer_spelling() -> None:
    frame = pd.read_csv(io.StringIO("user,item\n1,10\n2,\n" + "3,30\n" * 10)).dropna()
    interactions = read_interactions(frame, {"user": "user", "item": "item"}, "ranking")
    assert interactions.item_id_type == "int" and set(interactions.items) == {"10", "30"}


def test_ranking_metrics_on_a_hand_worked_example() -> None:
    # 2 users, 5 items; user 0 saw item 0, relevant held-out {1, 2}; user 1 has nothing relevant.
    scores = np.array([[9.0, 8.0, 1.0, 7.0, 0.0], [1, 2, 3, 4, 5]])
    seen = csr_from_pairs(np.array([0]), np.array([0]), 2, 5)
    relevant = csr_from_pairs(np.array([0, 0]), np.array([1, 2]), 2, 5)
    report = ranking_report(lambda users: scores[users], seen, relevant, k=2)
    # top-2 after excluding item 0: [1, 3] -> one hit at rank 1
    assert report["precision@2"] == pytest.approx(0.5) and report["recall@2"] == pytest.approx(0.5)
    assert report["ndcg@2"] == pytest.approx(1 / (1 + 1 / np.log2(3)))
    assert report["ranking_users"] == 1


def test_parquet_interactions_train_like_csv(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    ratings_frame().to_parquet(buffer, index=False)
    data = TrainingData(kind="tabular", format="parquet", content=buffer.getvalue())
    trained = train_job(data, spec("rating", epochs=3), tmp_path, lambda report: None, lambda: False)
    assert trained.preprocessing["item_id_type"] == "int" and "rmse" in trained.metrics
