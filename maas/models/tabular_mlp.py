"""The ``tabular-mlp`` family: a multilayer perceptron over preprocessed table columns.

This module is torch-free (hyperparameters, task inference, family metadata); the network is in
:mod:`maas.models.tabular_mlp_net`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from maas.errors import InvalidInput
from maas.models.base import DatasetInfo, JobPlan, PlanRequest, TaskKind

FAMILY_NAME = "tabular-mlp"
CLASSIFICATION_LOSSES = ("binary_cross_entropy", "categorical_cross_entropy")
REGRESSION_LOSSES = ("mse", "mae", "huber")
MAX_CLASSIFICATION_UNIQUE = 20

LossName = Literal["binary_cross_entropy", "categorical_cross_entropy", "mse", "mae", "huber"]


class TabularMLPHyperparameters(BaseModel):
    """Hyperparameters of ``tabular-mlp``. The defaults are tuned to reach the published quality floors."""

    model_config = ConfigDict(extra="forbid")

    hidden_layers: list[int] = Field(
        default=[64, 32], min_length=1, max_length=8, description="Width of each hidden layer (1..4096)."
    )
    activation: Literal["relu", "tanh", "gelu"] = "relu"
    dropout: float = Field(default=0.2, ge=0.0, le=0.9, description="Dropout after each hidden layer.")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="Momentum (sgd only).")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    epochs: int = Field(default=200, ge=1, le=10000, description="Most epochs; early stopping may end sooner.")
    batch_size: int = Field(default=32, ge=1, le=65536)
    loss: LossName | None = Field(
        default=None,
        description="None chooses from the task: categorical cross-entropy (classification) or mse.",
    )
    l1: float = Field(default=0.0, ge=0.0, le=1.0, description="L1 penalty on weights, added to the loss.")
    l2: float = Field(default=1e-4, ge=0.0, le=1.0, description="L2 penalty, applied as the optimizer's weight decay.")
    early_stopping_patience: int = Field(
        default=20, ge=0, le=10000, description="Epochs without validation improvement before stopping; 0 = off."
    )
    validation_split: float = Field(
        default=0.15, ge=0.0, le=0.5, description="Fraction held out for early stopping; 0 = none."
    )
    test_split: float = Field(default=0.2, ge=0.05, le=0.5, description="Fraction held out for evaluation.")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    @field_validator("hidden_layers")
    @classmethod
    def _layer_widths(cls, value: list[int]) -> list[int]:
        for width in value:
            if not 1 <= width <= 4096:
                raise ValueError(f"each hidden layer width must be between 1 and 4096, got {width}")
        return value

    def resolve_loss(self, task: TaskKind, n_classes: int = 0) -> LossName:
        """The loss to train with for ``task``; raises InvalidInput when the chosen loss does not fit."""
        if task == "classification":
            if self.loss is None:
                return "binary_cross_entropy" if n_classes == 2 else "categorical_cross_entropy"
            if self.loss not in CLASSIFICATION_LOSSES:
                raise InvalidInput(
                    f"loss '{self.loss}' is a regression loss; a classification target needs one of "
                    f"{', '.join(CLASSIFICATION_LOSSES)}",
                    errors=[{"loc": ["hyperparameters", "loss"], "msg": "regression loss for classification"}],
                )
            if self.loss == "binary_cross_entropy" and n_classes > 2:
                raise InvalidInput(
                    f"loss 'binary_cross_entropy' needs exactly 2 classes, the target has {n_classes}; "
                    "use 'categorical_cross_entropy'",
                    errors=[{"loc": ["hyperparameters", "loss"], "msg": "binary loss for more than 2 classes"}],
                )
            return self.loss
        if self.loss is None:
            return "mse"
        if self.loss not in REGRESSION_LOSSES:
            raise InvalidInput(
                f"loss '{self.loss}' is a classification loss; a regression target needs one of "
                f"{', '.join(REGRESSION_LOSSES)}",
                errors=[{"loc": ["hyperparameters", "loss"], "msg": "classification loss for regression"}],
            )
        return self.loss


def parse_hyperparameters(raw: dict[str, Any] | None) -> TabularMLPHyperparameters:
    """Validate user input; an unknown or out-of-range field raises InvalidInput naming it."""
    try:
        return TabularMLPHyperparameters.model_validate(raw or {})
    except ValidationError as exc:
        errors = [{"loc": ["hyperparameters", *error["loc"]], "msg": error["msg"]} for error in exc.errors()]
        summary = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:]) or 'hyperparameters'}: {error['msg']}"
            for error in errors
        )
        raise InvalidInput(f"invalid hyperparameters: {summary}", errors=errors) from None


def infer_task(column_profile: dict[str, Any]) -> TaskKind:
    """Classification for non-numeric targets and for numeric ones with few distinct (integer) values.

    ``column_profile`` is a dataset profile entry: ``{"name", "type", "missing", "unique", ...}``; an optional
    ``"integer"`` flag (all values whole numbers) is honoured when present."""
    if column_profile.get("type", "numeric") != "numeric":
        return "classification"
    unique = int(column_profile.get("unique", MAX_CLASSIFICATION_UNIQUE + 1))
    integer = column_profile.get("integer")
    if unique <= MAX_CLASSIFICATION_UNIQUE and integer is not False:
        return "classification"
    return "regression"


def _field_error(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", errors=[{"loc": ["body", field], "msg": message}])


def plan(dataset: DatasetInfo, request: PlanRequest) -> JobPlan:
    """Check that ``request.target`` is a usable column of a table and settle the task."""
    if dataset.kind != "tabular":
        raise _field_error("family", f"{FAMILY_NAME} trains on tables; dataset '{dataset.name}' is {dataset.kind}")
    names = sorted(column["name"] for column in dataset.columns)
    if request.columns:  # a role map meant for another family: say so rather than ignore it
        raise _field_error("columns", f"{FAMILY_NAME} takes no column roles: every column but the target is a feature")
    if request.target is None:
        raise _field_error("target", f"name the column to predict; columns: {names}")
    target_profile = dataset.column(request.target)
    if target_profile is None:
        raise _field_error("target", f"column '{request.target}' is not in the dataset; columns: {names}")
    task = request.task or infer_task(target_profile)
    if task not in ("classification", "regression"):
        raise _field_error("task", "must be 'classification' or 'regression'")
    classes = int(target_profile.get("unique", 0))
    if task == "classification" and classes < 2:
        found = "no values (every row is empty)" if classes == 0 else "a single class"
        raise _field_error("target", f"column '{request.target}' has {found}; classification needs two or more classes")
    if task == "regression" and target_profile.get("type") != "numeric":
        raise _field_error(
            "task", f"regression needs a numeric target; '{request.target}' is {target_profile.get('type')}"
        )
    if len(dataset.columns) < 2:
        raise _field_error("dataset_id", "the dataset has no feature columns besides the target")
    return JobPlan(task=task, target=request.target)


@dataclass(frozen=True)
class TabularMLPFamily:
    """The family's entry in :data:`maas.models.FAMILIES`."""

    name: str = FAMILY_NAME
    task_kinds: tuple[str, ...] = ("classification", "regression")
    data_kinds: tuple[str, ...] = ("tabular",)
    hyperparameters: type[TabularMLPHyperparameters] = TabularMLPHyperparameters

    def parse_hyperparameters(self, raw: dict[str, Any] | None) -> TabularMLPHyperparameters:
        return parse_hyperparameters(raw)

    def plan(self, dataset: DatasetInfo, request: PlanRequest) -> JobPlan:
        return plan(dataset, request)

    def describe(self) -> dict[str, Any]:
        return describe()


def describe() -> dict[str, Any]:
    """JSON description for ``maas families``."""
    return {
        "name": FAMILY_NAME,
        "tasks": ["classification", "regression"],
        "data": "tabular",
        "description": "Multilayer perceptron over standardised numeric and one-hot categorical columns.",
        "hyperparameters": TabularMLPHyperparameters.model_json_schema(),
        "artifact": "onnx",
    }


TABULAR_MLP = TabularMLPFamily()
