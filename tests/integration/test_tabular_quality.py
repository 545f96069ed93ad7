"""Published quality floors of tabular-mlp with DEFAULT hyperparameters, on scikit-learn's datasets.

Each case trains through train_tabular on a DataFrame, reads the held-out test metrics, and checks that
the served path (TabularPreprocessor.transform_records on raw rows + ONNX Runtime) gives the torch
network's predictions, the network being rebuilt from the run's safetensors checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import datasets

from maas.data.preprocessing import TabularPreprocessor
from maas.models.tabular_mlp import TabularMLPHyperparameters
from maas.models.tabular_mlp_net import build_network
from maas.training.checkpoints import read_weights
from maas.training.onnx_export import run_onnx, serving_module
from maas.training.tabular import EpochReport, TabularTrainSpec, train_tabular

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # A small MLP is fastest on one thread; two threads spin against each other on a busy 2-core box.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


@pytest.mark.parametrize(
    ("name", "metric", "floor"),
    [("breast_cancer", "accuracy", 0.96), ("wine", "accuracy", 0.95), ("diabetes", "r2", 0.35)],
)
def test_quality_floor(tmp_path: Path, name: str, metric: str, floor: float) -> None:
    frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
    hp = TabularMLPHyperparameters()
    spec = TabularTrainSpec(target="target", task=None, hyperparameters=hp, column_types={})
    reports: list[EpochReport] = []
    started = time.monotonic()
    model = train_tabular(frame, spec, tmp_path, reports.append, lambda: False)
    seconds = time.monotonic() - started
    print(f"{name}: {metric}={model.metrics[metric]:.4f} epochs={model.epochs_run} in {seconds:.1f}s")
    assert model.metrics[metric] >= floor
    assert seconds < 60
    assert len(reports) == model.epochs_run

    # served path: raw JSON rows -> preprocessing -> ONNX Runtime, against the torch network
    rows = frame.drop(columns=["target"]).sample(5, random_state=1)
    preprocessor = TabularPreprocessor.from_json(model.preprocessing)
    features = preprocessor.transform_records(_records(rows))
    np.testing.assert_allclose(features, preprocessor.transform_frame(rows), atol=1e-6)
    served = run_onnx(model.onnx_bytes, features)

    n_classes = len(model.signature.get("classes", []))
    network = build_network(preprocessor.n_features, 1 if n_classes <= 2 else n_classes, hp)
    network.load_state_dict(read_weights(tmp_path))
    scaling = model.signature.get("target_scaling", {"mean": 0.0, "std": 1.0})
    module = serving_module(
        network,
        "classification" if n_classes else "regression",
        single_logit=n_classes == 2,
        target_mean=scaling["mean"],
        target_std=scaling["std"],
    )
    with torch.no_grad():
        expected = module(torch.from_numpy(features)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=1e-5)
