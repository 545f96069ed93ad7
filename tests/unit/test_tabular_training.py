"""train_tabular on small synthetic tables: validation, resume, cancel, ONNX export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from maas.data.preprocessing import TabularPreprocessor
from maas.errors import InvalidInput
from maas.models.tabular_mlp import TabularMLPHyperparameters
from maas.models.tabular_mlp_net import build_network
from maas.training.onnx_export import export_onnx, run_onnx, serving_module
from maas.training.tabular import EpochReport, TabularTrainSpec, TrainingCancelled, train_tabular


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _frame(n: int = 160, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    label = np.where(x + (color == "red") > 0.3, "yes", "no")
    return pd.DataFrame({"x": x, "color": color, "flag": rng.random(n) > 0.5, "label": label, "amount": 3 * x + 1})


def _spec(target: str = "label", **hp: Any) -> TabularTrainSpec:
    settings: dict[str, Any] = {"epochs": 3, "early_stopping_patience": 0, "hidden_layers": [8]} | hp
    return TabularTrainSpec(
        target=target,
        task=None,
        hyperparameters=TabularMLPHyperparameters(**settings),
        column_types={"x": "numeric", "color": "categorical", "flag": "boolean"},
    )


def _never() -> bool:
    return False


def test_classification_result_shape(tmp_path: Path) -> None:
    reports: list[EpochReport] = []
    frame = _frame().drop(columns=["amount"])
    model = train_tabular(frame, _spec(), tmp_path, reports.append, _never)
    assert model.task == "classification" and model.epochs_run == 3
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert reports[-1].progress == 1.0 and "accuracy" in reports[-1].val_metrics
    assert model.signature["classes"] == ["no", "yes"]
    assert model.signature["onnx_output"] == "probabilities"
    assert {"accuracy", "f1_macro", "roc_auc", "log_loss", "confusion_matrix", "test_rows"} <= set(model.metrics)
    assert model.hyperparameters["loss"] == "binary_cross_entropy"
    pre = TabularPreprocessor.from_json(model.preprocessing)
    features = pre.transform_records([{"x": 0.5, "color": "red", "flag": True}, {"x": -2, "color": None, "flag": None}])
    probabilities = run_onnx(model.onnx_bytes, features)
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_regression_and_missing_targets_dropped(tmp_path: Path) -> None:
    frame = _frame().drop(columns=["label"])
    frame.loc[:9, "amount"] = np.nan
    model = train_tabular(frame, _spec("amount", loss="huber"), tmp_path, lambda r: None, _never)
    assert model.task == "regression"
    assert model.metrics["train_rows"] + model.metrics["validation_rows"] + model.metrics["test_rows"] == 150
    assert {"rmse", "mae", "r2"} <= set(model.metrics)
    assert model.signature["onnx_output"] == "prediction"
    out = run_onnx(model.onnx_bytes, np.zeros((5, len(model.preprocessing["feature_names"])), np.float32))
    assert out.shape == (5,)


def test_resume_does_not_redo_epochs(tmp_path: Path) -> None:
    frame = _frame()
    first: list[EpochReport] = []
    with pytest.raises(TrainingCancelled):
        train_tabular(frame, _spec(), tmp_path, first.append, lambda: len(first) >= 2)
    assert [r.epoch for r in first] == [1, 2]
    second: list[EpochReport] = []
    resumed = train_tabular(frame, _spec(), tmp_path, second.append, _never)
    assert [r.epoch for r in second] == [3]
    assert resumed.epochs_run == 3
    # the same as an uninterrupted run
    straight = train_tabular(frame, _spec(), tmp_path / "fresh", lambda r: None, _never)
    assert straight.metrics["log_loss"] == pytest.approx(resumed.metrics["log_loss"], abs=1e-6)
    features = TabularPreprocessor.from_json(resumed.preprocessing).transform_frame(frame)
    np.testing.assert_allclose(
        run_onnx(resumed.onnx_bytes, features), run_onnx(straight.onnx_bytes, features), atol=1e-6
    )


def test_resume_after_early_stop_trains_nothing(tmp_path: Path) -> None:
    spec = _spec(epochs=50, early_stopping_patience=1, learning_rate=5.0, optimizer="sgd")
    model = train_tabular(_frame(), spec, tmp_path, lambda r: None, _never)
    again: list[EpochReport] = []
    repeat = train_tabular(_frame(), spec, tmp_path, again.append, _never)
    assert again == [] and repeat.epochs_run == model.epochs_run


def test_cancel_raises(tmp_path: Path) -> None:
    with pytest.raises(TrainingCancelled):
        train_tabular(_frame(), _spec(), tmp_path, lambda r: None, lambda: True)


def test_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    train_tabular(_frame(), _spec(), tmp_path, lambda r: None, _never)
    with pytest.raises(Exception, match="different model or data"):
        train_tabular(_frame(), _spec(hidden_layers=[4]), tmp_path, lambda r: None, _never)


@pytest.mark.parametrize(
    ("frame_edit", "spec", "message"),
    [
        (lambda f: f, _spec("nope"), "not in the dataset"),
        (lambda f: f.assign(label="same"), _spec(), "at least 2"),
        (
            lambda f: f.assign(amount="abc"),
            TabularTrainSpec("amount", "regression", TabularMLPHyperparameters(), {}),
            "must be numeric",
        ),
        (lambda f: f, _spec("amount", loss="binary_cross_entropy"), "classification loss"),
        (lambda f: f, _spec("label", loss="mse"), "regression loss"),
        (lambda f: f.head(3), _spec(), "at least 4"),
    ],
)
def test_invalid_targets(tmp_path: Path, frame_edit: Any, spec: TabularTrainSpec, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        train_tabular(frame_edit(_frame()), spec, tmp_path, lambda r: None, _never)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("single_logit", [True, False])
def test_onnx_matches_torch_for_batch_1_and_1000(task: Any, single_logit: bool) -> None:
    hp = TabularMLPHyperparameters(hidden_layers=[16, 8], activation="gelu", dropout=0.3)
    n_out = 1 if single_logit or task == "regression" else 4
    module = serving_module(
        build_network(7, n_out, hp), task, single_logit=single_logit, target_mean=3.0, target_std=2.5
    )
    onnx_bytes = export_onnx(module, 7, "probabilities" if task == "classification" else "prediction")
    for batch in (1, 1000):
        features = np.random.default_rng(batch).normal(size=(batch, 7)).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(features)).numpy()
        actual = run_onnx(onnx_bytes, features)
        assert actual.shape == expected.shape
        assert actual.shape[0] == batch
        np.testing.assert_allclose(actual, expected, atol=1e-5)
