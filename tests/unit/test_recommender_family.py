"""``recommender-mf`` at submit time: roles from the request or common names, tasks, clear 422s."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from maas.errors import InvalidInput
from maas.models import FAMILIES
from maas.models.base import DatasetInfo, PlanRequest
from maas.models.recommender_mf import RECOMMENDER_MF


def dataset(**types: str) -> DatasetInfo:
    columns = [{"name": name, "type": kind, "missing": 0, "unique": 10} for name, kind in types.items()]
    return DatasetInfo(name="ratings", kind="tabular", format="csv", row_count=1000, columns=columns)


def plan(data: DatasetInfo, **request: object) -> tuple[str, str | None, dict[str, str]]:
    columns = request.get("columns", {})
    target, task = request.get("target"), request.get("task")
    assert isinstance(columns, dict) and (target is None or isinstance(target, str))
    assert task is None or isinstance(task, str)
    result = RECOMMENDER_MF.plan(data, PlanRequest(target=target, task=task, columns=columns))
    return result.task, result.target, result.roles


def test_family_is_registered_and_described_as_json() -> None:
    assert FAMILIES["recommender-mf"] is RECOMMENDER_MF
    described = json.loads(json.dumps(RECOMMENDER_MF.describe()))
    assert described["tasks"] == ["rating", "ranking"] and described["artifact"] == "safetensors"
    assert "factors" in described["hyperparameters"]["properties"]


def test_common_column_names_give_the_roles_and_the_rating_task() -> None:
    task, target, roles = plan(dataset(userId="numeric", movie_id="numeric", stars="numeric", ts="numeric"))
    assert task == "rating" and target == "stars"
    assert roles == {"user": "userId", "item": "movie_id", "rating": "stars", "timestamp": "ts"}


def test_without_a_rating_column_the_task_is_ranking() -> None:
    task, target, roles = plan(dataset(customer_id="categorical", product_id="categorical"))
    assert (task, target) == ("ranking", None)
    assert roles == {"user": "customer_id", "item": "product_id"}


def test_ranking_can_be_asked_for_when_ratings_exist() -> None:
    task, target, _ = plan(dataset(user="numeric", item="numeric", rating="numeric"), task="ranking")
    assert (task, target) == ("ranking", None)


def test_explicit_columns_and_target_map_unusual_names() -> None:
    data = dataset(who="categorical", what="categorical", how_much="numeric")
    task, target, roles = plan(data, columns={"user": "who", "item": "what"}, target="how_much")
    assert (task, target) == ("rating", "how_much")
    assert roles == {"user": "who", "item": "what", "rating": "how_much"}


def test_unknown_columns_are_a_422_listing_them_and_how_to_skip_them() -> None:
    data = dataset(user="numeric", item="numeric", rating="numeric", genre="categorical", title="text")
    with pytest.raises(InvalidInput) as error:
        plan(data)
    assert "'genre', 'title'" in error.value.detail
    assert '"ignore": "genre,title"' in error.value.detail
    task, _, roles = plan(data, columns={"ignore": "genre, title"})
    assert task == "rating" and "genre" not in roles.values()


def test_missing_user_or_item_names_the_columns_found_and_the_map_to_send() -> None:
    with pytest.raises(InvalidInput) as error:
        plan(dataset(person="categorical", rating="numeric"))
    detail = error.value.detail
    assert "no item" in detail and "no user" in detail and "person, rating" in detail
    assert '"columns": {"user": "<column>", "item": "<column>"}' in detail


@pytest.mark.parametrize(
    ("request_fields", "words"),
    [
        ({"columns": {"user": "nope"}}, "columns.user names 'nope'"),
        ({"columns": {"owner": "user"}}, "unknown role 'owner'"),
        ({"columns": {"ignore": "ghost"}}, "columns.ignore names 'ghost'"),
        ({"target": "ghost"}, "target 'ghost' is not in the dataset"),
        ({"task": "classification"}, "task 'classification'"),
        ({"columns": {"rating": "label"}}, "rating column 'label' is categorical"),
    ],
)
def test_bad_requests_are_422s_that_say_what_to_fix(request_fields: dict[str, object], words: str) -> None:
    data = dataset(user="numeric", item="numeric", label="categorical")
    with pytest.raises(InvalidInput) as error:
        plan(data, **(request_fields | ({} if "columns" in request_fields else {"columns": {"ignore": "label"}})))
    assert words in error.value.detail


def test_rating_task_without_ratings_and_non_tables_are_refused() -> None:
    with pytest.raises(InvalidInput, match="task 'rating' needs a numeric rating column"):
        plan(dataset(user="numeric", item="numeric"), task="rating")
    images = DatasetInfo(name="pics", kind="images", format="image-zip", row_count=100, columns=[])
    with pytest.raises(InvalidInput, match="interaction tables"):
        RECOMMENDER_MF.plan(images, PlanRequest(target=None, task=None))


def test_hyperparameters_have_bounds_and_per_task_defaults() -> None:
    hp = RECOMMENDER_MF.parse_hyperparameters({})
    assert hp.resolved_reg("rating") == 0.1 and hp.resolved_learning_rate("ranking") == 0.001
    assert RECOMMENDER_MF.parse_hyperparameters({"reg": 0.5}).resolved_reg("ranking") == 0.5
    with pytest.raises(InvalidInput, match="factors"):
        RECOMMENDER_MF.parse_hyperparameters({"factors": 0})
    with pytest.raises(InvalidInput, match="dropout"):
        RECOMMENDER_MF.parse_hyperparameters({"dropout": 0.1})


def test_the_family_and_its_runtime_import_without_torch() -> None:
    code = (
        "import sys, maas.models.recommender_mf, maas.serving.recommender_runtime; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
