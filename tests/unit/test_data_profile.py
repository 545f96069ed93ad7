"""Column profiles: type inference on a realistic frame, statistics, and JSON safety."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd

from maas.data.formats import read_table
from maas.data.profile import json_safe, profile_columns


def _by_name(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    profiles = profile_columns(frame)
    # allow_nan=False: NaN or infinity anywhere would fail here.
    json.dumps(profiles, allow_nan=False)
    return {profile["name"]: profile for profile in profiles}


def _mixed_csv(rows: int = 200) -> bytes:
    rng = np.random.default_rng(0)
    lines = ["id,age,income,churned,active,plan,signup,comment,zero_one,score"]
    plans = ["basic", "pro", "team"]
    for i in range(rows):
        age = "" if i % 17 == 0 else str(int(rng.integers(18, 90)))
        churned = "" if i % 23 == 0 else ("yes" if i % 3 == 0 else "no")
        active = "True" if i % 2 else "False"
        comment = f'"customer {i} wrote a long free-text comment about the service, number {i * 7}"'
        lines.append(
            f"u{i:05d},{age},{rng.normal(50000, 1000):.2f},{churned},{active},{plans[i % 3]},"
            f"2023-{1 + i % 12:02d}-{1 + i % 28:02d},{comment},{i % 2},{'inf' if i == 5 else i / 10}"
        )
    return ("\n".join(lines) + "\n").encode()


def test_type_inference_on_a_realistic_mixed_frame() -> None:
    frame, _ = read_table(_mixed_csv(), "customers.csv")
    profiles = _by_name(frame)
    types = {name: profile["type"] for name, profile in profiles.items()}
    assert types == {
        "id": "text",
        "age": "numeric",
        "income": "numeric",
        "churned": "boolean",
        "active": "boolean",
        "plan": "categorical",
        "signup": "datetime",
        "comment": "text",
        "zero_one": "numeric",  # a 0/1 integer column stays numeric
        "score": "numeric",
    }
    age = profiles["age"]
    assert age["missing"] == len(range(0, 200, 17))
    assert set(age["stats"]) == {"mean", "std", "min", "max"}
    assert 18 <= age["stats"]["min"] <= age["stats"]["mean"] <= age["stats"]["max"] <= 89
    assert isinstance(age["stats"]["mean"], float)
    assert profiles["score"]["stats"]["max"] == 19.9  # infinity is left out of the statistics
    plan = profiles["plan"]
    assert plan["unique"] == 3 and plan["missing"] == 0
    assert {top["value"] for top in plan["stats"]["top"]} == {"basic", "pro", "team"}
    assert sum(top["count"] for top in plan["stats"]["top"]) == 200
    assert profiles["signup"]["stats"] == {"min": "2023-01-01T00:00:00", "max": "2023-12-28T00:00:00"}
    assert profiles["churned"]["missing"] == len(range(0, 200, 23))
    assert len(profiles["id"]["stats"]["top"]) == 10
    assert profiles["comment"]["stats"]["mean_length"] > 40
    assert profiles["active"]["dtype"] == "bool"


def test_profile_shape_and_plain_python_values() -> None:
    frame = pd.DataFrame({"x": np.array([1, 2, 3], dtype="int32")})
    (profile,) = profile_columns(frame)
    assert profile == {
        "name": "x",
        "type": "numeric",
        "dtype": "int32",
        "missing": 0,
        "unique": 3,
        "stats": {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0},
    }
    assert type(profile["unique"]) is int and type(profile["stats"]["mean"]) is float


def test_native_dtypes() -> None:
    frame = pd.DataFrame(
        {
            "when": pd.to_datetime(pd.Series(["2024-01-01", None, "2024-03-01"])).dt.tz_localize("UTC"),
            "flag": pd.array([True, None, False], dtype="boolean"),
            "count": pd.array([1, None, 3], dtype="Int64"),
            "cat": pd.Categorical(["a", "b", "a"]),
            "nothing": [None, None, None],
            "single": [1.0, np.nan, np.nan],
        }
    )
    profiles = _by_name(frame)
    assert profiles["when"]["type"] == "datetime"
    assert profiles["when"]["stats"] == {"min": "2024-01-01T00:00:00+00:00", "max": "2024-03-01T00:00:00+00:00"}
    assert profiles["flag"]["type"] == "boolean"
    assert profiles["flag"]["stats"]["top"] == [{"value": True, "count": 1}, {"value": False, "count": 1}]
    assert profiles["count"]["type"] == "numeric" and profiles["count"]["missing"] == 1
    assert profiles["count"]["stats"]["mean"] == 2.0
    assert profiles["cat"]["type"] == "categorical"
    assert profiles["nothing"]["type"] == "text" and profiles["nothing"]["missing"] == 3
    assert profiles["single"]["stats"] == {"mean": 1.0, "std": None, "min": 1.0, "max": 1.0}


def test_strings_that_are_not_dates_or_numbers() -> None:
    frame = pd.DataFrame(
        {
            "month": ["May", "June", "March", "May"] * 5,
            "year_text": pd.Series(["2020", "2021", "2022", "2023"] * 5, dtype=object),
            "mostly_dates": ["2024-01-01"] * 19 + ["not a date"],
            "few_dates": ["2024-01-01"] * 10 + [f"code-{i}" for i in range(10)],
        }
    )
    types = {name: profile["type"] for name, profile in _by_name(frame).items()}
    assert types == {
        "month": "categorical",
        "year_text": "numeric",
        "mostly_dates": "datetime",
        "few_dates": "categorical",
    }


def test_csv_booleans_with_missing_values() -> None:
    frame, _ = read_table(b"flag,yn\nTrue,Y\n,N\nFalse,\n", "f.csv")
    types = {name: profile["type"] for name, profile in _by_name(frame).items()}
    assert types == {"flag": "boolean", "yn": "boolean"}


def test_many_distinct_short_strings_are_text_few_are_categorical() -> None:
    many = pd.DataFrame({"code": [f"c{i}" for i in range(200)]})
    repeated = pd.DataFrame({"code": [f"c{i % 80}" for i in range(200)]})
    assert profile_columns(many)[0]["type"] == "text"
    assert profile_columns(repeated)[0]["type"] == "categorical"


def test_json_safe() -> None:
    assert json_safe(np.float64("nan")) is None
    assert json_safe(float("inf")) is None
    assert json_safe(pd.NA) is None
    assert json_safe(pd.NaT) is None
    assert json_safe(np.int64(3)) == 3 and type(json_safe(np.int64(3))) is int
    assert json_safe(np.bool_(True)) is True
    assert json_safe(pd.Timestamp("2024-01-02 03:04:05")) == "2024-01-02T03:04:05"
    assert json_safe(np.datetime64("2024-01-02")) == "2024-01-02T00:00:00"
    assert json_safe(np.array([1, 2])) == [1, 2]
    assert json_safe(b"ab") == "ab"


def test_profile_of_parquet_strings() -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"s": ["a", None, "a"]}).to_parquet(buffer)
    frame = pd.read_parquet(io.BytesIO(buffer.getvalue()))
    (profile,) = profile_columns(frame)
    assert profile["type"] == "categorical" and profile["missing"] == 1 and profile["unique"] == 1
    assert profile["stats"]["top"] == [{"value": "a", "count": 2}]
