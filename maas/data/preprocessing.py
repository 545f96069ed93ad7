"""Fitted tabular preprocessing, serialised as JSON (DESIGN decision 5: no pickle).

Torch-free on purpose: the API server uses :class:`TabularPreprocessor` at predict time.

A preprocessor is fitted on the *training split only* and turns columns into one float32 matrix:

* ``numeric`` and ``boolean`` (``True``/``False`` → 1/0): median imputation, then standardisation;
* ``datetime``: seconds since the Unix epoch (naive times are taken as UTC), median imputation,
  standardisation;
* ``categorical`` and ``text``: most-frequent imputation, then one-hot over the ``MAX_CATEGORIES`` most
  frequent values; when there were more, one extra ``other`` slot takes the rest and any value unseen in
  training; without an ``other`` slot an unseen value encodes as all zeros.

At predict time :meth:`TabularPreprocessor.transform_records` takes JSON objects. A missing feature key or a
value of the wrong type raises :class:`~maas.errors.InvalidInput` naming the instance and the column;
``None`` means missing and is imputed. **Keys that are not feature columns are ignored**, so a client may
send whole rows (the target included).

JSON format (``to_json``)::

    {"format": "maas.tabular-preprocessor", "version": 1, "n_features": 7,
     "feature_names": ["age", "city=paris", "city=__other__", ...],
     "columns": [
        {"name": "age", "type": "numeric", "fill": 41.0, "mean": 0.12, "std": 1.3},
        {"name": "when", "type": "datetime", "fill": 1.7e9, "mean": 1.6e9, "std": 3.1e7},
        {"name": "city", "type": "categorical", "categories": ["lyon", "paris"], "other": true,
         "fill": "paris"}]}

For numeric/boolean/datetime columns ``mean``/``std`` are those of the imputed training values; ``fill`` is
the imputation value in the same units. Category keys are strings (see :func:`category_key`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from maas.errors import InvalidInput

FORMAT = "maas.tabular-preprocessor"
VERSION = 1
MAX_CATEGORIES = 50
OTHER = "__other__"
COLUMN_TYPES = ("numeric", "boolean", "categorical", "text", "datetime")
_SCALED_TYPES = ("numeric", "boolean", "datetime")
_MIN_STD = 1e-12
_TRUE_STRINGS = frozenset({"true", "t", "yes", "y", "1"})
_FALSE_STRINGS = frozenset({"false", "f", "no", "n", "0"})

JsonScalar = str | int | float | bool


class _WrongType(ValueError):
    """A value that cannot be read as the column's type; turned into InvalidInput by the caller."""


def category_key(value: Any) -> str:
    """The string a categorical value is one-hot encoded under: ``"x"``, ``7`` and ``7.0`` → ``"7"``,
    ``True`` → ``"true"``. Raises ``_WrongType`` for dicts, lists and other non-scalars."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return repr(value)
    raise _WrongType(f"expected a string, number or boolean, got {type(value).__name__}")


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _finite(value: int | float) -> float:
    """``value`` as a finite float; infinities and integers too large for a double are a ``_WrongType``."""
    try:
        number = float(value)
    except OverflowError:
        raise _WrongType("expected a finite number, got an integer too large for a 64-bit float") from None
    if not math.isfinite(number):
        raise _WrongType(f"expected a finite number, got {number}")
    return number


def _number(value: Any) -> float:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | float):
        return _finite(value)
    raise _WrongType(f"expected a number, got {type(value).__name__}")


def _boolean(value: Any) -> float:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and value in (0, 1):
        return float(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE_STRINGS:
            return 1.0
        if lowered in _FALSE_STRINGS:
            return 0.0
    shown = repr(value) if isinstance(value, str | int | float) else type(value).__name__
    raise _WrongType(f"expected a boolean, got {shown}")


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        raise _WrongType("expected an ISO 8601 date-time string or epoch seconds, got bool")
    if isinstance(value, int | float):
        return _finite(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = _parse_datetime_string(value)
    else:
        raise _WrongType(f"expected an ISO 8601 date-time string, got {type(value).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (ValueError, OverflowError, OSError) as exc:
        raise _WrongType(f"the date-time {value!r} is out of range") from exc


# pandas reads these words relative to the clock: the same request would predict differently tomorrow.
_RELATIVE_DATE_WORDS = frozenset({"now", "today", "tomorrow", "yesterday"})


def _parse_datetime_string(value: str) -> datetime:
    text = value.strip()
    if text.lower() in _RELATIVE_DATE_WORDS:
        raise _WrongType(f"{value!r} is relative to the clock; send an absolute ISO 8601 date-time")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _WrongType(f"cannot read {value!r} as a date-time") from exc
    if pd.isna(stamp):  # "", "NaT", "nat": pandas' missing value, not a moment
        raise _WrongType(f"cannot read {value!r} as a date-time; send null for a missing value")
    moment: datetime = stamp.to_pydatetime()
    return moment


# A standardised input beyond this many standard deviations is rejected rather than fed to the model: float32
# would overflow to infinity (and the model's output to NaN) long before any real data got there.
_MAX_SCALED = 1e12

_READERS = {"numeric": _number, "boolean": _boolean, "datetime": _epoch_seconds}


def _series_as_float(series: pd.Series, column_type: str) -> np.ndarray:
    """Column values in model units (float64), NaN where missing or unreadable."""
    if column_type == "numeric" or (column_type == "datetime" and pd.api.types.is_numeric_dtype(series.dtype)):
        if pd.api.types.is_bool_dtype(series.dtype):
            return series.astype("float64").to_numpy()
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if column_type == "datetime":
        moments = pd.to_datetime(series, utc=True, errors="coerce", format="mixed")
        seconds = (moments - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        return seconds.to_numpy(dtype="float64", na_value=np.nan)
    # boolean
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("float64").to_numpy()
    out = np.full(len(series), np.nan)
    for i, value in enumerate(series.tolist()):
        if not is_missing(value):
            try:
                out[i] = _boolean(value)
            except _WrongType:
                out[i] = np.nan
    return out


def _series_keys(series: pd.Series) -> list[str | None]:
    keys: list[str | None] = []
    for value in series.tolist():
        if is_missing(value):
            keys.append(None)
        else:
            try:
                keys.append(category_key(value))
            except _WrongType:
                keys.append(None)
    return keys


def _infer_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series.dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series.dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return "datetime"
    return "categorical"


@dataclass(frozen=True)
class _Scaled:
    name: str
    type: str
    fill: float
    mean: float
    std: float

    @property
    def width(self) -> int:
        return 1

    def feature_names(self) -> list[str]:
        return [self.name]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "fill": self.fill, "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class _OneHot:
    name: str
    type: str
    categories: tuple[str, ...]
    other: bool
    fill: str | None

    @property
    def width(self) -> int:
        return len(self.categories) + (1 if self.other else 0)

    @property
    def index(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.categories)}

    def feature_names(self) -> list[str]:
        names = [f"{self.name}={key}" for key in self.categories]
        return [*names, f"{self.name}={OTHER}"] if self.other else names

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "categories": list(self.categories),
            "other": self.other,
            "fill": self.fill,
        }


_Column = _Scaled | _OneHot


def _fit_scaled(name: str, column_type: str, values: np.ndarray) -> _Scaled:
    present = values[~np.isnan(values)]
    fill = float(np.median(present)) if present.size else 0.0
    imputed = np.where(np.isnan(values), fill, values)
    mean = float(imputed.mean()) if imputed.size else 0.0
    std = float(imputed.std()) if imputed.size else 1.0
    if not math.isfinite(std) or std < _MIN_STD:
        std = 1.0
    return _Scaled(name=name, type=column_type, fill=fill, mean=mean, std=std)


def _fit_one_hot(name: str, column_type: str, keys: list[str | None]) -> _OneHot:
    counts: dict[str, int] = {}
    for key in keys:
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = [key for key, _ in ranked[:MAX_CATEGORIES]]
    fill = ranked[0][0] if ranked else None
    return _OneHot(
        name=name, type=column_type, categories=tuple(sorted(kept)), other=len(ranked) > MAX_CATEGORIES, fill=fill
    )


class _ScaledStep:
    """Predict-time encoder of one numeric/boolean/datetime column into a row (a plain list)."""

    __slots__ = ("fast", "fill", "mean", "name", "offset", "reader", "std")

    def __init__(self, column: _Scaled, offset: int) -> None:
        self.name = column.name
        self.offset = offset
        self.fill = column.fill
        self.mean = column.mean
        self.std = column.std
        self.reader = _READERS[column.type]
        self.fast = column.type == "numeric"

    def encode(self, value: Any, row: list[float]) -> None:
        if self.fast and type(value) is float and math.isfinite(value):
            number = value
        elif is_missing(value):
            number = self.fill
        else:
            number = self.reader(value)
        scaled = (number - self.mean) / self.std
        if not abs(scaled) <= _MAX_SCALED:
            raise _WrongType(f"the value {value!r} is out of range for this column")
        row[self.offset] = scaled


class _OneHotStep:
    """Predict-time encoder of one categorical/text column into a row (a plain list)."""

    __slots__ = ("fallback", "fill_slot", "index", "name", "offset")

    def __init__(self, column: _OneHot, offset: int) -> None:
        self.name = column.name
        self.offset = offset
        self.index = column.index
        self.fallback = len(column.categories) if column.other else -1
        self.fill_slot = -1 if column.fill is None else self.index.get(column.fill, self.fallback)

    def encode(self, value: Any, row: list[float]) -> None:
        if type(value) is str:
            slot = self.index.get(value, self.fallback)
        elif is_missing(value):
            slot = self.fill_slot
        else:
            slot = self.index.get(category_key(value), self.fallback)
        if slot >= 0:
            row[self.offset + slot] = 1.0


class TabularPreprocessor:
    """Column-wise imputation, scaling and one-hot encoding; see the module docstring."""

    def __init__(self, columns: Sequence[_Column]) -> None:
        self._columns = tuple(columns)
        self._offsets: list[int] = []
        offset = 0
        for column in self._columns:
            self._offsets.append(offset)
            offset += column.width
        self.n_features = offset
        self._indexes = [column.index if isinstance(column, _OneHot) else {} for column in self._columns]
        self._plan = [
            _ScaledStep(column, offset) if isinstance(column, _Scaled) else _OneHotStep(column, offset)
            for column, offset in zip(self._columns, self._offsets, strict=True)
        ]

    @property
    def feature_columns(self) -> list[str]:
        return [column.name for column in self._columns]

    @property
    def feature_names(self) -> list[str]:
        return [name for column in self._columns for name in column.feature_names()]

    @classmethod
    def fit(cls, frame: pd.DataFrame, feature_columns: list[str], column_types: dict[str, str]) -> TabularPreprocessor:
        """Fit on ``frame`` (the training split). A column missing from ``column_types`` gets its type
        from the frame's dtype."""
        missing = [name for name in feature_columns if name not in frame.columns]
        if missing:
            raise InvalidInput(f"feature columns not in the data: {', '.join(missing)}")
        columns: list[_Column] = []
        for name in feature_columns:
            column_type = column_types.get(name) or _infer_type(frame[name])
            if column_type not in COLUMN_TYPES:
                raise InvalidInput(
                    f"column '{name}' has unsupported type '{column_type}' (expected one of {COLUMN_TYPES})"
                )
            if column_type in _SCALED_TYPES:
                columns.append(_fit_scaled(name, column_type, _series_as_float(frame[name], column_type)))
            else:
                columns.append(_fit_one_hot(name, column_type, _series_keys(frame[name])))
        return cls(columns)

    def transform_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode a DataFrame holding (at least) the feature columns as a float32 ``[n, n_features]``."""
        missing = [column.name for column in self._columns if column.name not in frame.columns]
        if missing:
            raise InvalidInput(f"feature columns not in the data: {', '.join(missing)}")
        out = np.zeros((len(frame), self.n_features), dtype=np.float32)
        rows = np.arange(len(frame))
        for column, offset, index in zip(self._columns, self._offsets, self._indexes, strict=True):
            if isinstance(column, _Scaled):
                values = _series_as_float(frame[column.name], column.type)
                values = np.where(np.isnan(values), column.fill, values)
                out[:, offset] = (values - column.mean) / column.std
                continue
            slots = np.array([self._slot(column, index, key) for key in _series_keys(frame[column.name])])
            hit = slots >= 0
            out[rows[hit], offset + slots[hit]] = 1.0
        return out

    @staticmethod
    def _slot(column: _OneHot, index: dict[str, int], key: str | None) -> int:
        if key is None:
            key = column.fill
            if key is None:
                return -1
        slot = index.get(key)
        if slot is not None:
            return slot
        return len(column.categories) if column.other else -1

    def transform_records(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """Encode JSON objects (column → value) for prediction; fast for small batches (no DataFrame).

        Raises InvalidInput naming the instance index and column for a missing key or a wrong value type.
        Keys that are not feature columns are ignored."""
        rows: list[list[float]] = []
        errors: list[dict[str, Any]] = []
        for i, record in enumerate(records):
            row = [0.0] * self.n_features
            rows.append(row)
            if not isinstance(record, dict):
                errors.append({"loc": ["instances", i], "msg": "expected an object of column: value"})
                continue
            for step in self._plan:
                try:
                    value = record[step.name]
                except KeyError:
                    errors.append({"loc": ["instances", i, step.name], "msg": "missing feature column"})
                    continue
                try:
                    step.encode(value, row)
                except _WrongType as exc:
                    errors.append({"loc": ["instances", i, step.name], "msg": str(exc)})
        if errors:
            first = errors[0]
            where = f"instance {first['loc'][1]}" + (f", column '{first['loc'][2]}'" if len(first["loc"]) > 2 else "")
            more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
            raise InvalidInput(f"{where}: {first['msg']}{more}", errors=errors)
        if not rows:
            return np.zeros((0, self.n_features), dtype=np.float32)
        return np.array(rows, dtype=np.float32)

    def input_schema(self) -> list[dict[str, Any]]:
        return [{"name": column.name, "type": column.type} for column in self._columns]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "n_features": self.n_features,
            "feature_names": self.feature_names,
            "columns": [column.to_json() for column in self._columns],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TabularPreprocessor:
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise InvalidInput(f"not a {FORMAT} version {VERSION} document")
        columns: list[_Column] = []
        for item in data["columns"]:
            if item["type"] in _SCALED_TYPES:
                columns.append(
                    _Scaled(
                        name=item["name"],
                        type=item["type"],
                        fill=float(item["fill"]),
                        mean=float(item["mean"]),
                        std=float(item["std"]),
                    )
                )
            elif item["type"] in COLUMN_TYPES:
                columns.append(
                    _OneHot(
                        name=item["name"],
                        type=item["type"],
                        categories=tuple(item["categories"]),
                        other=bool(item["other"]),
                        fill=item["fill"],
                    )
                )
            else:
                raise InvalidInput(f"unknown column type '{item['type']}' in preprocessor")
        return cls(columns)
