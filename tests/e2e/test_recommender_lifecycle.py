"""``recommender-mf`` over HTTP: upload interactions, train, deploy, ask the three questions, and the 4xx cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from maas.client import Client, MaasAPIError
from tests.harness import LiveServer, csv_bytes, new_tenant

HYPERPARAMETERS = {"epochs": 30, "batch_size": 128, "learning_rate": 0.01, "factors": 16}


def interactions(n_users: int = 120, n_items: int = 80, per_user: int = 25) -> pd.DataFrame:
    """Ratings from a 3-factor taste model, with a column (genre) that is no role."""
    rng = np.random.default_rng(11)
    tastes, traits = rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3))
    rows = []
    for user in range(n_users):
        for item in rng.choice(n_items, per_user, replace=False):
            stars = float(np.clip(np.round(3 + 0.8 * tastes[user] @ traits[item] + rng.normal(scale=0.3)), 1, 5))
            rows.append((user + 1, f"m{item}", stars, 880_000_000 + len(rows), ["drama", "comedy"][item % 2]))
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp", "genre"])


@pytest.fixture(scope="module")
def deployed(server: LiveServer) -> dict[str, Any]:
    tenant = new_tenant(server, "recommender")
    client = server.client(tenant["key"])
    frame = interactions()
    content = csv_bytes(frame)
    assert len(content) < 500_000
    dataset = client.upload_dataset_bytes(content, "ratings.csv", name="ratings")
    jobs_before = len(client.list_jobs())
    with pytest.raises(MaasAPIError) as refused:
        client.train(dataset["id"], family="recommender-mf", model_name="recs")
    job = client.train(
        dataset["id"],
        family="recommender-mf",
        model_name="recs",
        columns={"ignore": "genre"},
        hyperparameters=HYPERPARAMETERS,
    )
    finished = client.wait_for_job(job["id"], timeout=300)
    assert finished["state"] == "succeeded", finished
    client.create_endpoint("recs", "recs", alias="latest")
    return {
        "client": client,
        "frame": frame,
        "dataset": dataset,
        "job": finished,
        "refused": refused.value,
        "jobs_before": jobs_before,
        "server": server,
    }


def ask(deployed: dict[str, Any], instances: list[Any], **parameters: Any) -> list[dict[str, Any]]:
    client = deployed["client"]
    assert isinstance(client, Client)
    answer = client.predict("recs", instances, parameters=parameters or None)
    assert answer["model"] == "recs" and answer["version"] == 1
    predictions: list[dict[str, Any]] = answer["predictions"]
    return predictions


def test_unknown_columns_are_refused_at_submit_and_create_no_job(deployed: dict[str, Any]) -> None:
    refused = deployed["refused"]
    assert refused.status == 422
    assert "'genre'" in refused.problem["detail"] and '"ignore": "genre"' in refused.problem["detail"]
    client = deployed["client"]
    assert len(client.list_jobs()) == deployed["jobs_before"] + 1  # only the accepted job


def test_missing_user_or_item_columns_name_what_was_found(deployed: dict[str, Any]) -> None:
    client = deployed["client"]
    table = pd.DataFrame({"who": ["a", "b"] * 10, "what": list(range(20))})
    other = client.upload_dataset_bytes(csv_bytes(table), "odd.csv", name="odd")
    with pytest.raises(MaasAPIError) as refused:
        client.train(other["id"], family="recommender-mf", model_name="odd")
    assert refused.value.status == 422
    assert "who, what" in refused.value.problem["detail"] and '"columns"' in refused.value.problem["detail"]
    job = client.train(other["id"], family="recommender-mf", model_name="odd", columns={"user": "who", "item": "what"})
    assert job["id"]  # mapped, it is accepted (as implicit feedback: there is no rating)


def test_version_records_rating_and_ranking_metrics(deployed: dict[str, Any]) -> None:
    client = deployed["client"]
    version = client.get_model_version("recs", 1)
    metrics = version["metrics"]
    spread = float(deployed["frame"]["rating"].std())
    assert metrics["rmse"] < 0.85 * spread and metrics["mae"] > 0
    assert {"precision@10", "recall@10", "ndcg@10"} <= set(metrics)


def test_the_three_questions(deployed: dict[str, Any]) -> None:
    frame = deployed["frame"]
    rating, top, similar = ask(deployed, [{"user": 5, "item": "m3"}, {"user": "5", "k": 4}, {"item": "m3"}], k=6)
    assert rating["user"] == 5 and rating["item"] == "m3" and 1 <= rating["rating"] <= 5
    rated = set(frame.loc[frame["user_id"] == 5, "movie_id"])
    items = [entry["item"] for entry in top["items"]]
    assert len(items) == 4 and not set(items) & rated and top["cold_start"] is False
    assert len(similar["similar"]) == 6 and "m3" not in [entry["item"] for entry in similar["similar"]]


def test_cold_start_user_and_unknown_item(deployed: dict[str, Any]) -> None:
    cold, unknown, fine = ask(deployed, [{"user": 99999}, {"user": 5, "item": "m999"}, {"item": "m1", "k": 2}])
    assert cold["cold_start"] is True and len(cold["items"]) == 10
    most_rated = deployed["frame"]["movie_id"].value_counts().index[0]
    assert cold["items"][0]["item"] == most_rated
    assert unknown["error"] == "unknown item 'm999'"
    assert len(fine["similar"]) == 2


@pytest.mark.parametrize(
    ("instances", "parameters", "named"),
    [
        ([{"user": 5}, {"k": 3}], None, "instances[1]"),
        ([{"user": 5, "k": 0}], None, "instances[0].k"),
        ([{"user": [5]}], None, "instances[0].user"),
        ([{"user": 5}], {"k": 10_000}, "parameters.k"),
    ],
)
def test_malformed_requests_are_422_naming_the_instance(
    deployed: dict[str, Any], instances: list[Any], parameters: dict[str, Any] | None, named: str
) -> None:
    client = deployed["client"]
    with pytest.raises(MaasAPIError) as refused:
        client.predict("recs", instances, parameters=parameters)
    assert refused.value.status == 422 and named in refused.value.problem["detail"]
