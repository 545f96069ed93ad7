"""The classes of a classification target, encoded as indices and kept as JSON values in the model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from maas.data.preprocessing import JsonScalar, category_key, is_missing
from maas.errors import InvalidInput


def _label_value(value: Any) -> JsonScalar:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str | bool | int | float):
        return value
    raise InvalidInput(f"target values must be strings, numbers or booleans, got {type(value).__name__}")


def _sort_key(value: JsonScalar) -> tuple[int, float, str]:
    if isinstance(value, bool):
        return (0, float(value), "")
    if isinstance(value, int | float):
        return (1, float(value), "")
    return (2, 0.0, value)


class LabelEncoder:
    """Classes of a classification target, kept as their JSON values and sorted (booleans, then numbers,
    then strings). Integer-valued floats (``1.0`` from a column with gaps) become ints."""

    def __init__(self, classes: Sequence[JsonScalar]) -> None:
        self.classes: list[JsonScalar] = list(classes)
        self._index = {category_key(value): i for i, value in enumerate(self.classes)}

    @classmethod
    def fit(cls, values: Iterable[Any]) -> LabelEncoder:
        seen: dict[str, JsonScalar] = {}
        for value in values:
            if is_missing(value):
                continue
            label = _label_value(value)
            seen.setdefault(category_key(label), label)
        return cls(sorted(seen.values(), key=_sort_key))

    def encode(self, values: Iterable[Any]) -> np.ndarray:
        """Class indices (int64); raises InvalidInput for a value not among the classes."""
        out: list[int] = []
        for value in values:
            key = category_key(_label_value(value))
            if key not in self._index:
                raise InvalidInput(f"unknown class {value!r}")
            out.append(self._index[key])
        return np.asarray(out, dtype=np.int64)

    def decode(self, indices: Iterable[int]) -> list[JsonScalar]:
        return [self.classes[int(i)] for i in indices]

    def to_json(self) -> dict[str, Any]:
        return {"classes": list(self.classes)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelEncoder:
        return cls(data["classes"])
