"""tabular-mlp hyperparameters, task inference and the family registry."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from maas.errors import InvalidInput
from maas.models import FAMILIES
from maas.models.base import DatasetInfo, PlanRequest
from maas.models.tabular_mlp import (
    FAMILY_NAME,
    TabularMLPHyperparameters,
    describe,
    infer_task,
    parse_hyperparameters,
)


def test_defaults() -> None:
    hp = TabularMLPHyperparameters()
    assert hp.hidden_layers == [64, 32]
    assert hp.activation == "relu" and hp.optimizer == "adam" and hp.loss is None
    assert hp.test_split == 0.2 and hp.seed == 0


def test_unknown_key_is_rejected_by_name() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_hyperparameters({"learning_rat": 0.1})
    assert "learning_rat" in caught.value.detail
    assert caught.value.errors[0]["loc"] == ["hyperparameters", "learning_rat"]
    with pytest.raises(ValidationError):
        TabularMLPHyperparameters.model_validate({"learning_rat": 0.1})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_layers", []),
        ("hidden_layers", [8] * 9),
        ("hidden_layers", [0]),
        ("hidden_layers", [5000]),
        ("dropout", 0.95),
        ("learning_rate", 0),
        ("learning_rate", 11),
        ("epochs", 0),
        ("batch_size", 70000),
        ("validation_split", 0.6),
        ("test_split", 0.01),
        ("l1", -1),
        ("activation", "sigmoid"),
        ("optimizer", "rmsprop"),
        ("loss", "hinge"),
    ],
)
def test_out_of_bounds_is_rejected(field: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_hyperparameters({field: value})
    assert field in caught.value.detail


def test_loss_must_fit_the_task() -> None:
    with pytest.raises(InvalidInput, match="regression loss"):
        TabularMLPHyperparameters(loss="mse").resolve_loss("classification", 2)
    with pytest.raises(InvalidInput, match="classification loss"):
        TabularMLPHyperparameters(loss="categorical_cross_entropy").resolve_loss("regression")
    with pytest.raises(InvalidInput, match="2 classes"):
        TabularMLPHyperparameters(loss="binary_cross_entropy").resolve_loss("classification", 3)
    assert TabularMLPHyperparameters().resolve_loss("classification", 2) == "binary_cross_entropy"
    assert TabularMLPHyperparameters().resolve_loss("classification", 5) == "categorical_cross_entropy"
    assert TabularMLPHyperparameters().resolve_loss("regression") == "mse"


@pytest.mark.parametrize(
    ("profile", "task"),
    [
        ({"name": "y", "type": "categorical", "unique": 300}, "classification"),
        ({"name": "y", "type": "boolean", "unique": 2}, "classification"),
        ({"name": "y", "type": "text", "unique": 2}, "classification"),
        ({"name": "y", "type": "numeric", "unique": 3}, "classification"),
        ({"name": "y", "type": "numeric", "unique": 3, "integer": False}, "regression"),
        ({"name": "y", "type": "numeric", "unique": 214}, "regression"),
    ],
)
def test_infer_task(profile: dict[str, Any], task: str) -> None:
    assert infer_task(profile) == task


def test_family_registry() -> None:
    family = FAMILIES[FAMILY_NAME]
    assert family.name == "tabular-mlp"
    assert set(family.task_kinds) == {"classification", "regression"}
    assert family.hyperparameters is TabularMLPHyperparameters
    assert family.parse_hyperparameters({"epochs": 5}).model_dump()["epochs"] == 5
    schema = describe()["hyperparameters"]
    assert schema["additionalProperties"] is False
    assert "learning_rate" in schema["properties"]
    assert family.describe() == describe()


@pytest.mark.parametrize("family", ["tabular-mlp", "image-cnn"])
def test_a_column_role_map_is_refused_by_families_without_roles(family: str) -> None:
    kind = "images" if family == "image-cnn" else "tabular"
    columns = [{"name": "label", "type": "categorical", "unique": 2, "missing": 0}, {"name": "x", "type": "numeric"}]
    dataset = DatasetInfo(name="d", kind=kind, format="csv", row_count=10, columns=columns)
    with pytest.raises(InvalidInput, match="columns"):
        FAMILIES[family].plan(dataset, PlanRequest(target="label", task=None, columns={"text": "x"}))
