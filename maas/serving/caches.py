"""Caches on the predict path: endpoint routes (short TTL) and loaded models (LRU).

A route answers "which model version does tenant T's endpoint E serve now"; it is dropped at once when
this process changes an endpoint or alias, and otherwise lives ``ttl`` seconds, so changes made through
another API instance are seen within that time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from maas.serving.batcher import AdaptiveBatcher
from maas.serving.servable import ModelIdentity, ServableModel


class RouteCache:
    """Routes by (tenant, endpoint), with a generation per tenant that every invalidation bumps.

    A lookup started before a change must not put its stale answer back after the change: it reads the
    generation first and :meth:`put` drops the answer if the generation moved on meanwhile."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._routes: dict[tuple[str, str], tuple[float, ModelIdentity]] = {}
        self._generations: dict[str, int] = {}

    def get(self, tenant_id: str, endpoint: str) -> ModelIdentity | None:
        hit = self._routes.get((tenant_id, endpoint))
        if hit is None or hit[0] <= self._clock():
            return None
        return hit[1]

    def generation(self, tenant_id: str) -> int:
        return self._generations.get(tenant_id, 0)

    def put(self, tenant_id: str, endpoint: str, identity: ModelIdentity, generation: int) -> None:
        if generation == self.generation(tenant_id):
            self._routes[(tenant_id, endpoint)] = (self._clock() + self._ttl, identity)

    def invalidate_tenant(self, tenant_id: str) -> None:
        self._generations[tenant_id] = self.generation(tenant_id) + 1
        for key in [key for key in self._routes if key[0] == tenant_id]:
            del self._routes[key]


Batcher = AdaptiveBatcher[np.ndarray[Any, Any], np.ndarray[Any, Any]]


@dataclass
class LoadedModel:
    model: ServableModel
    batcher: Batcher | None  # None for a model that is not batchable: it runs in the caller


def inline_rule(model: ServableModel) -> Callable[[list[np.ndarray[Any, Any]]], bool]:
    """Up to ``model.inline_max_rows`` rows (default 0), a batch runs on the event loop: for a tabular MLP
    (tens of microseconds) that is cheaper than a hop to the batcher's thread and back. Heavier models
    (convolutions, recurrent encoders) leave it at 0 so the event loop never waits on them."""
    limit = int(getattr(model, "inline_max_rows", 0))

    def runs_inline(items: list[np.ndarray[Any, Any]]) -> bool:
        return sum(len(item) for item in items) <= limit

    return runs_inline


def make_batch_runner(model: ServableModel) -> Callable[[list[np.ndarray[Any, Any]]], list[np.ndarray[Any, Any]]]:
    """Merge the requests of a batch into one ONNX call and split the output back per request."""

    def run_batch(items: list[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        if len(items) == 1:
            return [model.run(items[0])]
        output = model.run(np.concatenate(items, axis=0))
        bounds = np.cumsum([len(item) for item in items])[:-1]
        return list(np.split(output, bounds))

    return run_batch


class ModelCache:
    """Loaded models by version id, least recently used evicted first.

    An evicted or replaced model keeps serving the requests already holding it: callers take a reference
    to the ``LoadedModel`` before awaiting, so a switch of version never drops a request in flight.
    """

    def __init__(self, capacity: int, max_batch_size: int, max_wait_s: float) -> None:
        self._capacity = capacity
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()

    def get(self, model_version_id: str) -> LoadedModel | None:
        loaded = self._models.get(model_version_id)
        if loaded is not None:
            self._models.move_to_end(model_version_id)
        return loaded

    def add(self, model: ServableModel) -> tuple[LoadedModel, list[LoadedModel]]:
        """Insert a freshly loaded model; returns it and the models evicted to make room."""
        existing = self._models.get(model.identity.model_version_id)
        if existing is not None:
            return existing, []
        batcher: Batcher | None = None
        if model.batchable:
            batcher = AdaptiveBatcher(
                make_batch_runner(model),
                max_batch_size=self._max_batch_size,
                max_wait_s=self._max_wait_s,
                run_inline=inline_rule(model),
                name=f"{model.identity.model_name}/{model.identity.version}",
            )
        loaded = LoadedModel(model=model, batcher=batcher)
        self._models[model.identity.model_version_id] = loaded
        evicted = []
        while len(self._models) > self._capacity:
            _, old = self._models.popitem(last=False)
            evicted.append(old)
        return loaded, evicted

    def all(self) -> list[LoadedModel]:
        return list(self._models.values())

    def clear(self) -> list[LoadedModel]:
        models = list(self._models.values())
        self._models.clear()
        return models


def identity_of(model_version_id: str, model_name: str, version: int) -> ModelIdentity:
    return ModelIdentity(model_version_id=model_version_id, model_name=model_name, version=version)
