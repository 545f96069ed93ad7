"""Column profiles: the inferred type of each column and a few statistics, as plain JSON values.

A profile is what the console shows after an upload and what model families read to build their input
schema, so the inferred ``type`` is a contract: ``numeric``, ``categorical``, ``boolean``, ``text`` or
``datetime``. Nothing here returns NaN, infinity or a numpy/pandas scalar: every value is plain JSON.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import warnings
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from pandas.tseries.api import guess_datetime_format

ColumnType = Literal["numeric", "categorical", "boolean", "text", "datetime"]

TOP_VALUES = 10
# Strings with at most this many distinct values are categorical whatever the row count ...
CATEGORICAL_MAX_UNIQUE = 50
# ... and so are strings repeating enough (distinct / non-missing at most this), unless they are long.
CATEGORICAL_MAX_RATIO = 0.5
# Strings whose median length is above this are prose (``text``), not category labels.
TEXT_MIN_MEDIAN_LENGTH = 40
# A string column is ``datetime`` when at least this share of its values parse as dates.
DATETIME_MIN_SHARE = 0.95
# Type inference looks at this many values at most (evenly spread), statistics at all of them.
INFERENCE_SAMPLE = 2000

_BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "t", "f", "y", "n"})
_HAS_DIGIT = re.compile(r"\d")


def profile_columns(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One profile per column, in column order (see the module docstring for the shape)."""
    return [profile_column(str(name), frame.iloc[:, position]) for position, name in enumerate(frame.columns)]


def profile_column(name: str, series: pd.Series[Any]) -> dict[str, Any]:
    present = series.dropna()
    kind = infer_type(series)
    return {
        "name": name,
        "type": kind,
        "dtype": str(series.dtype),
        "missing": int(len(series) - len(present)),
        "unique": _unique_count(present),
        "stats": _stats(kind, present),
    }


# --- type inference -------------------------------------------------------------------------------------


def infer_type(series: pd.Series[Any]) -> ColumnType:
    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype):
        return "boolean"
    if ptypes.is_datetime64_any_dtype(dtype):
        return "datetime"
    if ptypes.is_numeric_dtype(dtype):
        return "numeric"
    present = series.dropna()
    if isinstance(dtype, pd.CategoricalDtype):
        return "boolean" if _all_boolean_words(present) else "categorical"
    if present.empty:
        return "text"
    sample = _sample(present)
    if _all_boolean_words(sample) and _all_boolean_words(present):
        return "boolean"
    if _numeric_values(sample).notna().all() and _numeric_values(present).notna().all():
        return "numeric"
    if _looks_like_dates(sample):
        return "datetime"
    strings = present.astype(str)
    unique = int(strings.nunique())
    short = float(strings.str.len().median()) <= TEXT_MIN_MEDIAN_LENGTH
    if short and (unique <= CATEGORICAL_MAX_UNIQUE or unique / len(strings) <= CATEGORICAL_MAX_RATIO):
        return "categorical"
    return "text"


def _sample(present: pd.Series[Any]) -> pd.Series[Any]:
    if len(present) <= INFERENCE_SAMPLE:
        return present
    positions = np.linspace(0, len(present) - 1, INFERENCE_SAMPLE).astype(int)
    return present.iloc[positions]


def _all_boolean_words(present: pd.Series[Any]) -> bool:
    if present.empty:
        return False
    words = {str(value).strip().lower() for value in present.unique()}
    return words <= _BOOLEAN_WORDS


def _numeric_values(present: pd.Series[Any]) -> pd.Series[Any]:
    """The values as floats (NaN where one is not a number); Python bools do not count as numbers."""
    if present.map(lambda value: isinstance(value, bool)).any():
        return pd.Series(np.nan, index=present.index)
    return pd.to_numeric(present, errors="coerce")


def _looks_like_dates(sample: pd.Series[Any]) -> bool:
    strings = sample.astype(str).str.strip()
    # Month names alone ("May") and bare numbers ("2024") are labels and numbers, not dates.
    if strings.str.contains(_HAS_DIGIT).mean() < DATETIME_MIN_SHARE:
        return False
    if pd.to_numeric(strings, errors="coerce").notna().mean() >= DATETIME_MIN_SHARE:
        return False
    return bool(_to_datetimes(strings).notna().mean() >= DATETIME_MIN_SHARE)


def _to_datetimes(values: pd.Series[Any]) -> pd.Series[Any]:
    """Parse strings as datetimes (NaT where not a date), with the fastest format that fits.

    The format is chosen on a sample: ISO 8601, then the format pandas guesses from the first value, then
    each value on its own (slow, so last). Mixed time zones are converted to UTC rather than refused.
    """
    strings = values.astype(str)
    if strings.empty:
        return pd.Series(pd.NaT, index=strings.index, dtype="datetime64[ns]")
    sample = _sample(strings)
    formats = ["ISO8601"]
    guessed = guess_datetime_format(str(strings.iloc[0]))
    if guessed:
        formats.append(guessed)
    formats.append("mixed")
    chosen, best_share = formats[0], -1.0
    for fmt in formats:
        share = float(_parse_dates(sample, fmt).notna().mean())
        if share > best_share:
            chosen, best_share = fmt, share
        if share >= DATETIME_MIN_SHARE:
            break
    return _parse_dates(strings, chosen)


def _parse_dates(strings: pd.Series[Any], fmt: str) -> pd.Series[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pd.to_datetime(strings, errors="coerce", format=fmt)
        except (ValueError, TypeError, OverflowError):
            try:
                return pd.to_datetime(strings, errors="coerce", format=fmt, utc=True)
            except (ValueError, TypeError, OverflowError):
                return pd.Series(pd.NaT, index=strings.index, dtype="datetime64[ns]")


# --- statistics -----------------------------------------------------------------------------------------


def _unique_count(present: pd.Series[Any]) -> int:
    try:
        return int(present.nunique())
    except TypeError:  # unhashable values (lists from a Parquet list column)
        return int(present.astype(str).nunique())


def _stats(kind: ColumnType, present: pd.Series[Any]) -> dict[str, Any]:
    if kind == "numeric":
        return _numeric_stats(present)
    if kind == "datetime":
        return _datetime_stats(present)
    stats: dict[str, Any] = {"top": _top_values(present)}
    if kind in ("text", "categorical"):
        lengths = present.astype(str).str.len()
        if kind == "text":
            stats["mean_length"] = finite_float(lengths.mean()) if len(lengths) else None
        # lets a text family refuse an over-long text at submit instead of failing the job in a worker
        stats["max_length"] = int(lengths.max()) if len(lengths) else 0
    return stats


def _numeric_stats(present: pd.Series[Any]) -> dict[str, Any]:
    values = _numeric_values(present).dropna().astype("float64")
    finite = values[np.isfinite(values)]
    if finite.empty:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {
        "mean": finite_float(finite.mean()),
        "std": finite_float(finite.std()) if len(finite) > 1 else None,
        "min": finite_float(finite.min()),
        "max": finite_float(finite.max()),
    }


def _datetime_stats(present: pd.Series[Any]) -> dict[str, Any]:
    is_native = ptypes.is_datetime64_any_dtype(present.dtype)
    parsed = present if is_native else _to_datetimes(present).dropna()
    if parsed.empty:
        return {"min": None, "max": None}
    return {"min": json_safe(parsed.min()), "max": json_safe(parsed.max())}


def _top_values(present: pd.Series[Any]) -> list[dict[str, Any]]:
    try:
        counts = present.value_counts()
    except TypeError:
        counts = present.astype(str).value_counts()
    return [{"value": json_safe(value), "count": int(count)} for value, count in counts.head(TOP_VALUES).items()]


# --- JSON-safe values -----------------------------------------------------------------------------------


def finite_float(value: Any) -> float | None:
    """A plain float, or None for NaN, infinity and anything that is not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def json_safe(value: Any) -> Any:
    """Turn one cell into a plain JSON value: NaN/NA/NaT → None, timestamps → ISO strings, numpy → python."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    elif isinstance(value, np.timedelta64):
        value = pd.Timedelta(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if value is pd.NaT:
        return None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float | Decimal):
        return finite_float(value)
    return _json_safe_object(value)


def _json_safe_object(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, pd.Timedelta | dt.timedelta):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(item) for item in value]
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)
