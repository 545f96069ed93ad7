"""The numpy serving runtime of ``recommender-mf``: three questions per instance, no torch, no ONNX.

Instances (ids as int or str, matched as the training table had them: 7 and "7" are the same id):

- ``{"user": u, "item": i}`` → ``{"user", "item", "rating"}`` (rating task, clipped to the training
  ratings' range) or ``{"user", "item", "score"}`` (ranking task);
- ``{"user": u}`` → the top ``k`` items the user has not interacted with, best first;
- ``{"item": i}`` → the ``k`` items nearest to ``i`` by cosine similarity of the item factors.

``k`` comes from the instance, else ``parameters.k``, else 10, and is at most the model's ``max_k``.
An unknown user gets the most popular items (and, with an item, the item's baseline) flagged
``"cold_start": true``; an unknown item makes that instance an ``{"error": ...}`` entry while the other
instances are answered. A malformed instance is a 422 naming its index.

A model answering three kinds of question is not batchable (the server calls encode → run → decode on
the event loop); each answer is one dot product over the item table, well under a millisecond here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors

from maas.errors import InvalidInput
from maas.serving.servable import ModelIdentity

DEFAULT_K = 10
_FIELDS = frozenset({"user", "item", "k"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class _Query:
    user: str | None
    item: str | None
    k: int


def _bad(index: int, field: str, message: str) -> InvalidInput:
    where = f"instances[{index}]" + (f".{field}" if field else "")
    return InvalidInput(f"{where}: {message}", errors=[{"loc": ["body", "instances", index, field], "msg": message}])


def _id(value: Any, index: int, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _bad(index, field, f"the {field} id must be a string or an integer, got {type(value).__name__}")
    return str(value)


class RecommenderModel:
    """A loaded ``recommender-mf`` model (see the module docstring)."""

    accepted_parameters = frozenset({"k"})
    batchable = False

    def __init__(
        self, identity: ModelIdentity, artifact: bytes, preprocessing: dict[str, Any], signature: dict[str, Any]
    ) -> None:
        self.identity = identity
        self.signature = signature
        tensors = load_safetensors(artifact)
        self.task = str(preprocessing["task"])
        self.user_factors = tensors["user_factors"].astype(np.float64)
        self.item_factors = tensors["item_factors"].astype(np.float64)
        self.user_bias = tensors["user_bias"].astype(np.float64)
        self.item_bias = tensors["item_bias"].astype(np.float64)
        self.global_mean = float(tensors["global_mean"][0])
        self.seen_indptr = tensors["seen_indptr"]
        self.seen_indices = tensors["seen_indices"]
        norms = np.linalg.norm(self.item_factors, axis=1, keepdims=True)
        self.item_unit = self.item_factors / np.where(norms > 0, norms, 1.0)
        self.user_ids: list[str] = list(preprocessing["user_ids"])
        self.item_ids: list[str] = list(preprocessing["item_ids"])
        self.user_index = {user: i for i, user in enumerate(self.user_ids)}
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.popular = np.asarray(preprocessing["popularity"], dtype=np.int64)
        self.item_as_int = preprocessing.get("item_id_type") == "int"
        self.user_as_int = preprocessing.get("user_id_type") == "int"
        rating_range = preprocessing.get("rating_range")
        self.rating_range = (float(rating_range[0]), float(rating_range[1])) if rating_range else None
        self.max_k = min(int(preprocessing.get("max_k", 100)), len(self.item_ids))

    # --- encode: validate ----------------------------------------------------------------------------

    def _k(self, value: Any, where: str, loc: list[Any]) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.max_k:
            raise InvalidInput(
                f"{where}: k must be an integer from 1 to {self.max_k}, got {value!r}",
                errors=[{"loc": loc, "msg": f"k out of bounds 1..{self.max_k}"}],
            )
        return value

    def encode(self, instances: list[Any], parameters: Mapping[str, Any]) -> list[_Query]:
        default_k = DEFAULT_K if "k" not in parameters else None
        if default_k is None:
            default_k = self._k(parameters["k"], "parameters.k", ["body", "parameters", "k"])
        default_k = min(default_k, self.max_k)
        queries = []
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise _bad(index, "", 'each instance is an object such as {"user": ..., "item": ...}')
            unknown = sorted(set(instance) - _FIELDS)
            if unknown:
                raise _bad(index, unknown[0], f"unknown field(s) {', '.join(unknown)}; use user, item and k")
            user, item = _id(instance.get("user"), index, "user"), _id(instance.get("item"), index, "item")
            if user is None and item is None:
                raise _bad(index, "", 'an instance needs a "user", an "item", or both')
            k = default_k
            if "k" in instance:
                k = self._k(instance["k"], f"instances[{index}].k", ["body", "instances", index, "k"])
            queries.append(_Query(user, item, k))
        return queries

    # --- run: answer ---------------------------------------------------------------------------------

    def _item_id(self, index: int) -> int | str:
        item = self.item_ids[index]
        return int(item) if self.item_as_int else item

    def _user_id(self, user: str) -> int | str:
        # As an int only when it is one written plainly: str.isdigit() also accepts "²" and "--5", which
        # int() refuses (that was a 500), and "007" echoed as 7 would hide that it matched no user. Past
        # 64 bits it stays a string: no trained id is that large, and orjson cannot write it (a 500 too).
        if self.user_as_int:
            try:
                number = int(user)
            except ValueError:
                return user
            if str(number) == user and _INT64_MIN <= number <= _INT64_MAX:
                return number
        return user

    def _scores(self, user: int) -> np.ndarray:
        scores: np.ndarray = self.item_factors @ self.user_factors[user] + self.item_bias
        scores += self.global_mean + self.user_bias[user]
        return scores

    def _best(self, scores: np.ndarray, k: int) -> np.ndarray:
        candidates = np.flatnonzero(np.isfinite(scores))
        k = min(k, len(candidates))
        if k == 0:
            return candidates
        top = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        return top[np.argsort(-scores[top], kind="stable")]

    def _rating(self, query: _Query, user: int | None, item: int) -> dict[str, Any]:
        value = self.global_mean + self.item_bias[item]
        if user is not None:
            value += self.user_bias[user] + float(self.item_factors[item] @ self.user_factors[user])
        if self.rating_range is not None:
            value = min(max(value, self.rating_range[0]), self.rating_range[1])
        assert query.user is not None
        answer: dict[str, Any] = {"user": self._user_id(query.user), "item": self._item_id(item)}
        answer["rating" if self.task == "rating" else "score"] = float(value)
        if user is None:
            answer["cold_start"] = True
        return answer

    def _top_k(self, query: _Query, user: int | None) -> dict[str, Any]:
        assert query.user is not None
        if user is None:
            items: list[dict[str, Any]] = [
                {"item": self._item_id(int(i)), "score": None} for i in self.popular[: query.k]
            ]
            return {"user": self._user_id(query.user), "items": items, "cold_start": True}
        scores = self._scores(user)
        scores[self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]]] = -np.inf
        best = self._best(scores, query.k)
        items = [{"item": self._item_id(int(i)), "score": float(scores[i])} for i in best]
        return {"user": self._user_id(query.user), "items": items, "cold_start": False}

    def _similar(self, item: int, k: int) -> dict[str, Any]:
        similarity = self.item_unit @ self.item_unit[item]
        similarity[item] = -np.inf
        best = self._best(similarity, k)
        similar = [{"item": self._item_id(int(i)), "similarity": float(similarity[i])} for i in best]
        return {"item": self._item_id(item), "similar": similar}

    def _answer(self, query: _Query) -> dict[str, Any]:
        user = self.user_index.get(query.user) if query.user is not None else None
        if query.item is None:
            return self._top_k(query, user)
        item = self.item_index.get(query.item)
        if item is None:
            return {"error": f"unknown item '{query.item}'", "item": query.item}
        if query.user is None:
            return self._similar(item, query.k)
        return self._rating(query, user, item)

    def run(self, features: list[_Query]) -> list[dict[str, Any]]:
        return [self._answer(query) for query in features]

    def decode(self, output: list[dict[str, Any]], parameters: Mapping[str, Any]) -> dict[str, Any]:
        return {"predictions": output}
