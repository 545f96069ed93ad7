"""The numpy runtime of ``recommender-mf``: the three questions, cold start, unknown items, 422s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pandas as pd
import pytest
import torch

from maas.errors import InvalidInput
from maas.serving.loaders import load_servable
from maas.serving.recommender_runtime import RecommenderModel
from maas.serving.servable import ModelIdentity
from maas.training.recommender_mf import train_job
from tests.unit.test_recommender_training import csv_data, ratings_frame, spec


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Small embedding models are fastest on one thread; two threads spin against each other on a busy
    # 2-core box (measured: 4 s on one thread, 177 s on two, for the same run).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return ratings_frame()


@pytest.fixture(scope="module")
def model(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> RecommenderModel:
    trained = train_job(csv_data(frame), spec("rating"), tmp_path_factory.mktemp("ckpt"), lambda r: None, lambda: False)
    identity = ModelIdentity(model_version_id="mv_test", model_name="recs", version=1)
    servable = load_servable("recommender-mf", identity, trained.artifact, trained.preprocessing, trained.signature)
    assert isinstance(servable, RecommenderModel) and servable.batchable is False
    return servable


def ask(model: RecommenderModel, instances: list[Any], **parameters: Any) -> list[dict[str, Any]]:
    answer = model.decode(model.run(model.encode(instances, parameters)), parameters)
    predictions: list[dict[str, Any]] = answer["predictions"]
    return predictions


def test_predicted_rating_is_in_range_and_ids_match_as_int_or_str(model: RecommenderModel) -> None:
    by_int, by_str = ask(model, [{"user": "u3", "item": 105}, {"user": "u3", "item": "105"}])
    assert by_int == by_str
    assert by_int["user"] == "u3" and by_int["item"] == 105  # ids come back as the table had them
    assert 1.0 <= by_int["rating"] <= 5.0 and "cold_start" not in by_int


def test_top_k_leaves_out_what_the_user_rated_best_first(model: RecommenderModel, frame: pd.DataFrame) -> None:
    (answer,) = ask(model, [{"user": "u7"}], k=5)
    rated = set(frame.loc[frame["user"] == "u7", "item"])
    items = [entry["item"] for entry in answer["items"]]
    assert len(items) == 5 and not set(items) & rated and answer["cold_start"] is False
    scores = [entry["score"] for entry in answer["items"]]
    assert scores == sorted(scores, reverse=True)
    (three,) = ask(model, [{"user": "u7", "k": 3}], k=5)  # the instance's k wins
    assert [entry["item"] for entry in three["items"]] == items[:3]
    (everything,) = ask(model, [{"user": "u7", "k": 40}])  # fewer left than asked: all the unrated ones
    assert len(everything["items"]) == 40 - len(rated)


def test_similar_items_by_cosine_exclude_the_item_itself(model: RecommenderModel) -> None:
    (answer,) = ask(model, [{"item": 110}])
    similar = answer["similar"]
    assert answer["item"] == 110 and len(similar) == 10
    assert 110 not in [entry["item"] for entry in similar]
    values = [entry["similarity"] for entry in similar]
    assert values == sorted(values, reverse=True) and all(-1.0 <= v <= 1.0 + 1e-9 for v in values)


def test_unknown_user_gets_popular_items_and_unknown_item_an_error_entry(
    model: RecommenderModel, frame: pd.DataFrame
) -> None:
    answers = ask(model, [{"user": "stranger"}, {"item": 9999}, {"user": "u1", "item": "nope"}, {"user": "u1"}])
    cold, missing, missing_too, fine = answers
    assert cold["cold_start"] is True and cold["user"] == "stranger"
    top = frame["item"].value_counts().index[:3].tolist()
    counts = frame["item"].value_counts()
    assert [counts[entry["item"]] for entry in cold["items"][:3]] == [counts[item] for item in top]
    assert missing["error"] == "unknown item '9999'" and missing_too["error"] == "unknown item 'nope'"
    assert len(fine["items"]) == 10
    (baseline,) = ask(model, [{"user": "stranger", "item": 101}])
    assert baseline["cold_start"] is True and 1 <= baseline["rating"] <= 5


@pytest.mark.parametrize(
    ("instances", "parameters", "words"),
    [
        ([{"user": "u1"}, {}], {}, 'instances[1]: an instance needs a "user", an "item", or both'),
        ([{"user": True}], {}, "instances[0].user: the user id must be a string or an integer, got bool"),
        ([{"item": 1.5}], {}, "instances[0].item: the item id must be a string or an integer, got float"),
        ([{"user": "u1"}, {"user": "u1", "k": 0}], {}, "instances[1].k: k must be an integer from 1 to 40"),
        ([{"user": "u1", "k": 1000}], {}, "instances[0].k: k must be an integer from 1 to 40"),
        ([{"user": "u1"}], {"k": "ten"}, "parameters.k: k must be an integer"),
        ([{"user": "u1", "items": [1]}], {}, "instances[0].items: unknown field(s) items"),
        (["u1"], {}, "instances[0]: each instance is an object"),
    ],
)
def test_malformed_instances_are_422s_naming_the_instance(
    model: RecommenderModel, instances: list[Any], parameters: dict[str, Any], words: str
) -> None:
    with pytest.raises(InvalidInput) as error:
        model.encode(instances, parameters)
    assert words in error.value.detail


def test_each_answer_takes_well_under_a_millisecond(model: RecommenderModel) -> None:
    instances = [{"user": f"u{i % 60}"} for i in range(100)] + [{"item": 100 + i % 40} for i in range(100)]
    queries = model.encode(instances, {})
    started = time.perf_counter()
    model.run(queries)
    assert (time.perf_counter() - started) / len(instances) < 1e-3


def test_an_unknown_user_of_an_int_id_model_is_echoed_as_sent(tmp_path_factory: pytest.TempPathFactory) -> None:
    # "²" and "--5" passed str.isdigit() after lstrip("-") and then int() raised: a 500 on predict
    frame = ratings_frame(n_users=12, n_items=15, per_user=8)
    frame["user"] = frame["user"].str.removeprefix("u").astype(int)
    trained = train_job(csv_data(frame), spec("rating"), tmp_path_factory.mktemp("ckpt"), lambda r: None, lambda: False)
    identity = ModelIdentity(model_version_id="mv_int", model_name="recs", version=1)
    model = load_servable("recommender-mf", identity, trained.artifact, trained.preprocessing, trained.signature)
    assert isinstance(model, RecommenderModel) and model.user_as_int
    # and an int id past 64 bits came back as an int that orjson cannot write: a 500 as well
    sent = ["²", "--5", "007", "-0", "1" + "0" * 5000, 10**100, "3", 3]
    answers = ask(model, [{"user": user, "k": 2} for user in sent])
    assert [answer["user"] for answer in answers] == ["²", "--5", "007", "-0", "1" + "0" * 5000, str(10**100), 3, 3]
    assert [answer["cold_start"] for answer in answers] == [True] * 6 + [False, False]
    orjson.dumps(answers)
