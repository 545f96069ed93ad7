"""TabularPreprocessor and LabelEncoder: fitting, JSON round trip, predict-time records and their errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from maas.data.labels import LabelEncoder
from maas.data.preprocessing import MAX_CATEGORIES, TabularPreprocessor
from maas.errors import InvalidInput

TYPES = {"age": "numeric", "member": "boolean", "city": "categorical", "note": "text", "joined": "datetime"}


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [30.0, 40.0, np.nan, 50.0, 20.0, 40.0],
            "member": [True, False, None, True, True, False],
            "city": ["paris", "lyon", "paris", None, "nice", "paris"],
            "note": ["a", "b", "a", "a", "c", None],
            "joined": ["2024-01-01", "2024-02-01T12:00:00", None, "2023-12-31", "2024-03-01", "2024-01-15"],
            "y": [0, 1, 0, 1, 0, 1],
        }
    )


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.to_dict(orient="records")
    return [{str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]


@pytest.fixture
def fitted() -> TabularPreprocessor:
    return TabularPreprocessor.fit(_frame(), list(TYPES), TYPES)


def test_fit_shapes_and_standardisation(fitted: TabularPreprocessor) -> None:
    matrix = fitted.transform_frame(_frame())
    assert matrix.dtype == np.float32
    assert matrix.shape == (6, fitted.n_features)
    assert fitted.n_features == 1 + 1 + 3 + 3 + 1  # age, member, city x3, note x3, joined
    age = matrix[:, 0]
    assert abs(float(age.mean())) < 1e-6 and abs(float(age.std()) - 1) < 1e-5
    assert fitted.input_schema() == [{"name": name, "type": kind} for name, kind in TYPES.items()]
    # missing city imputed with the most frequent value
    city = fitted.feature_names.index("city=paris")
    assert matrix[3, city] == 1.0


def test_records_match_frame(fitted: TabularPreprocessor) -> None:
    frame = _frame()
    np.testing.assert_allclose(fitted.transform_records(_records(frame)), fitted.transform_frame(frame), atol=1e-6)


def test_json_round_trip_is_exact(fitted: TabularPreprocessor) -> None:
    document = json.loads(json.dumps(fitted.to_json()))
    again = TabularPreprocessor.from_json(document)
    assert again.to_json() == fitted.to_json()
    np.testing.assert_array_equal(again.transform_frame(_frame()), fitted.transform_frame(_frame()))


def test_unseen_category_and_extra_keys(fitted: TabularPreprocessor) -> None:
    record = {"age": 33, "member": "yes", "city": "tokyo", "note": 7, "joined": 1.7e9, "unknown": {"x": 1}}
    row = fitted.transform_records([record])[0]
    for name in ("city=paris", "city=lyon", "city=nice"):
        assert row[fitted.feature_names.index(name)] == 0.0


def test_many_categories_get_an_other_slot() -> None:
    frame = pd.DataFrame({"c": [f"v{i % 80}" for i in range(400)] + ["v0"] * 10})
    pre = TabularPreprocessor.fit(frame, ["c"], {"c": "categorical"})
    assert pre.n_features == MAX_CATEGORIES + 1
    assert pre.feature_names[-1] == "c=__other__"
    row = pre.transform_records([{"c": "never-seen"}])[0]
    assert row[-1] == 1.0 and row.sum() == 1.0


def test_zero_variance_column_is_safe() -> None:
    pre = TabularPreprocessor.fit(pd.DataFrame({"k": [3.0, 3.0, 3.0]}), ["k"], {})
    assert np.isfinite(pre.transform_records([{"k": 10}])).all()


def test_missing_column_names_instance_and_column(fitted: TabularPreprocessor) -> None:
    records = _records(_frame())
    del records[1]["age"]
    with pytest.raises(InvalidInput) as caught:
        fitted.transform_records(records)
    assert "instance 1" in caught.value.detail and "'age'" in caught.value.detail
    assert caught.value.errors[0]["loc"] == ["instances", 1, "age"]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("age", "abc"),
        ("age", [1]),
        ("city", {"a": 1}),
        ("member", "maybe"),
        ("joined", "not a date"),
        ("joined", ""),
        ("joined", "NaT"),
        ("joined", "now"),
        ("joined", "99999-01-01"),
    ],
)
def test_wrong_type_names_instance_and_column(fitted: TabularPreprocessor, column: str, value: Any) -> None:
    records = _records(_frame())
    records[2][column] = value
    with pytest.raises(InvalidInput) as caught:
        fitted.transform_records(records)
    assert caught.value.errors == [{"loc": ["instances", 2, column], "msg": caught.value.errors[0]["msg"]}]
    assert f"'{column}'" in caught.value.detail


def test_none_is_imputed(fitted: TabularPreprocessor) -> None:
    row = fitted.transform_records([dict.fromkeys(TYPES)])
    assert np.isfinite(row).all()


def test_label_encoder_round_trip() -> None:
    encoder = LabelEncoder.fit([2.0, 1.0, None, 2.0, 10.0])
    assert encoder.classes == [1, 2, 10]
    assert encoder.encode([10, 1.0]).tolist() == [2, 0]
    again = LabelEncoder.from_json(json.loads(json.dumps(encoder.to_json())))
    assert again.classes == encoder.classes
    assert LabelEncoder.fit(["b", "a", "b"]).decode([0, 1]) == ["a", "b"]
    assert LabelEncoder.fit([True, False]).classes == [False, True]
    with pytest.raises(InvalidInput):
        encoder.encode(["zzz"])


def test_no_torch_on_the_predict_path() -> None:
    code = "import sys, maas.data.preprocessing, maas.models; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
