"""``text-classifier`` over HTTP: upload a CSV and a JSONL text dataset, train, deploy, predict raw strings,
and the 4xx cases (empty, megabyte and non-string texts; an over-long text in a dataset is refused at submit)."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pandas as pd
import pytest

from maas.client import Client, MaasAPIError
from tests.harness import LiveServer, csv_bytes, new_tenant

GOOD = ["great", "wonderful", "moving", "brilliant", "funny", "charming", "superb"]
BAD = ["dull", "boring", "awful", "tedious", "clumsy", "lifeless", "bland"]
FILLER = ["the", "film", "plot", "actors", "story", "was", "really", "quite", "a", "movie", "and", "its"]
HYPERPARAMETERS = {
    "embedding_dim": 32,
    "hidden_size": 32,
    "bigrams": 500,
    "vocab_size": 400,
    "max_length": 16,
    "epochs": 10,
}


def reviews(n: int, seed: int) -> pd.DataFrame:
    """Generated reviews whose verdict is which word list they draw from."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        verdict = rng.choice(["fresh", "rotten"])
        words = rng.sample(FILLER, 5) + rng.sample(GOOD if verdict == "fresh" else BAD, 2)
        rng.shuffle(words)
        rows.append({"review": " ".join(words).capitalize() + ".", "verdict": verdict})
    return pd.DataFrame(rows)


def jsonl_bytes(frame: pd.DataFrame) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in frame.to_dict(orient="records")).encode()


@pytest.fixture(scope="module")
def deployed(server: LiveServer) -> dict[str, Any]:
    tenant = new_tenant(server, "texts")
    client = server.client(tenant["key"])
    csv_dataset = client.upload_dataset_bytes(csv_bytes(reviews(300, seed=1)), "reviews.csv", name="reviews")
    jsonl_dataset = client.upload_dataset_bytes(jsonl_bytes(reviews(300, seed=2)), "reviews.jsonl", name="reviews-j")
    jobs = {
        name: client.train(dataset["id"], family="text-classifier", model_name=name, hyperparameters=HYPERPARAMETERS)
        for name, dataset in (("reviews", csv_dataset), ("reviews-j", jsonl_dataset))
    }
    finished = {name: client.wait_for_job(job["id"], timeout=300) for name, job in jobs.items()}
    for job in finished.values():
        assert job["state"] == "succeeded", job
    client.create_endpoint("reviews", "reviews", alias="latest")
    client.create_endpoint("reviews-j", "reviews-j", alias="latest")
    return {"client": client, "csv": csv_dataset, "jsonl": jsonl_dataset, "jobs": finished, "server": server}


def test_jsonl_upload_is_profiled_as_a_table(deployed: dict[str, Any]) -> None:
    dataset = deployed["jsonl"]
    assert dataset["format"] == "jsonl" and dataset["row_count"] == 300
    assert {c["name"] for c in dataset["columns"]} == {"review", "verdict"}


def test_both_models_learn_and_record_their_roles(deployed: dict[str, Any]) -> None:
    client: Client = deployed["client"]
    for name in ("reviews", "reviews-j"):
        version = client.get_model_version(name, 1)
        assert version["metrics"]["accuracy"] >= 0.85, version["metrics"]
        assert version["metrics"]["dropped_rows"] == 0


def test_predict_raw_strings_and_text_objects(deployed: dict[str, Any]) -> None:
    client: Client = deployed["client"]
    for endpoint in ("reviews", "reviews-j"):
        answer = client.predict(endpoint, ["A wonderful and moving film.", {"text": "Dull, boring and tedious."}])
        assert answer["predictions"] == ["fresh", "rotten"]
        assert answer["model"] == endpoint and answer["version"] == 1
        assert all(abs(sum(p.values()) - 1) < 1e-4 for p in answer["probabilities"])


@pytest.mark.parametrize(
    ("instances", "status", "words"),
    [
        (["fine film", "   "], 422, "instance 1: the text is empty"),
        (["fine", 42], 422, "instance 1: expected a string"),
        ([{"body": "x"}], 422, "instance 0"),
        (["fine", "x" * 200_000], 413, "instance 1: the text has 200000 characters; at most 100000"),
        (["x" * 1_500_000], 413, "MAAS_MAX_REQUEST_BYTES"),  # the server's body limit comes first
    ],
)
def test_bad_instances_get_clear_4xx(deployed: dict[str, Any], instances: list[Any], status: int, words: str) -> None:
    client: Client = deployed["client"]
    with pytest.raises(MaasAPIError) as refused:
        client.predict("reviews", instances)
    assert refused.value.status == status and words in refused.value.problem["detail"]


def test_over_long_text_in_a_dataset_is_refused_at_submit_and_registers_nothing(deployed: dict[str, Any]) -> None:
    # it used to be accepted and fail the job in a worker; the dataset profile's max_length stops it at submit
    client: Client = deployed["client"]
    frame = reviews(60, seed=3)
    frame.loc[4, "review"] = "word " * 25_000
    dataset = client.upload_dataset_bytes(csv_bytes(frame), "long.csv", name="long")
    jobs_before = len(client.list_jobs())
    with pytest.raises(MaasAPIError) as refused:
        client.train(dataset["id"], "verdict", family="text-classifier", model_name="long", columns={"text": "review"})
    assert refused.value.status == 422
    assert "125,000 characters" in refused.value.problem["detail"] and "100,000" in refused.value.problem["detail"]
    assert len(client.list_jobs()) == jobs_before
    with pytest.raises(MaasAPIError) as missing:
        client.get_model("long")
    assert missing.value.status == 404


def test_submit_time_column_errors(deployed: dict[str, Any]) -> None:
    client: Client = deployed["client"]
    with pytest.raises(MaasAPIError) as refused:
        client.train(deployed["csv"]["id"], "verdict", family="text-classifier", columns={"text": "nope"})
    assert refused.value.status == 422 and "nope" in refused.value.problem["detail"]
    server: LiveServer = deployed["server"]
    families = httpx.get(f"{server.url}/api/v1/families", headers=client._http.headers).json()
    assert "text-classifier" in {family["name"] for family in families}
