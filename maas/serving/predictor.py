"""The protocol-neutral prediction data plane (STYLE habit 5): every wire format calls ``predict``.

Hot path with warm caches: route lookup (dict), validate + encode instances, one batched ONNX call,
decode. No database query and no blocking call on the event loop.

Encoding runs on the event loop only when it is cheap: a model whose inputs must be decoded (images:
``encode_in_thread``) or a batch of more than ``ENCODE_INLINE_MAX`` instances is encoded in a small pool of
threads of its own (449 large PNGs decoded on the event loop stalled every request for 13 s). The pool is
bounded (``ENCODE_THREADS``), so concurrent large batches queue there instead of each holding tens of MB of
decoded pixels at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from maas.billing.usage import UsageRecorder
from maas.db.engine import session_scope
from maas.db.tables import Model, ModelVersion
from maas.errors import InvalidInput, PayloadTooLarge
from maas.serving.caches import LoadedModel, ModelCache, RouteCache, identity_of
from maas.serving.endpoints import resolve_endpoint
from maas.serving.loaders import load_servable
from maas.serving.servable import ModelIdentity, ServableModel
from maas.singleflight import SingleFlight
from maas.storage import ArtifactStore

ENCODE_INLINE_MAX = 32
ENCODE_THREADS = 4


def _encodes_in_thread(model: ServableModel, instances: list[Any]) -> bool:
    return bool(getattr(model, "encode_in_thread", False)) or len(instances) > ENCODE_INLINE_MAX


def _check_parameters(model: ServableModel, parameters: Mapping[str, Any]) -> None:
    """A misspelt option (``topk``, or ``k`` sent to an image model) is refused, not silently ignored."""
    accepted: frozenset[str] = getattr(model, "accepted_parameters", frozenset())
    unknown = sorted(set(parameters) - accepted)
    if unknown:
        takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes none"
        detail = f"unknown parameters {', '.join(map(repr, unknown))} for this model: {takes}"
        raise InvalidInput(detail, errors=[{"loc": ["body", "parameters", name], "msg": detail} for name in unknown])


class PredictionService:
    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        store: ArtifactStore,
        usage: UsageRecorder,
        max_instances: int,
        route_ttl_seconds: float,
        batch_max_size: int,
        batch_max_wait_s: float,
        model_capacity: int = 32,
    ) -> None:
        self._factory = factory
        self._store = store
        self._usage = usage
        self._max_instances = max_instances
        self.routes = RouteCache(route_ttl_seconds)
        self.models = ModelCache(model_capacity, batch_max_size, batch_max_wait_s)
        # Concurrent cache misses share one database lookup and one model load.
        self._route_lookups: SingleFlight[ModelIdentity] = SingleFlight()
        self._loads: SingleFlight[LoadedModel] = SingleFlight()
        self._encoder = concurrent.futures.ThreadPoolExecutor(
            max_workers=ENCODE_THREADS, thread_name_prefix="predict-encode"
        )

    async def predict(
        self, tenant_id: str, endpoint: str, instances: Any, parameters: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        started = time.perf_counter()
        self._check_batch(instances)
        parameters = parameters or {}
        identity = self.routes.get(tenant_id, endpoint) or await self._route(tenant_id, endpoint)
        loaded = self.models.get(identity.model_version_id) or await self._loads.run(
            identity.model_version_id, lambda: self._load(identity)
        )
        model = loaded.model
        _check_parameters(model, parameters)
        if _encodes_in_thread(model, instances):
            features = await asyncio.get_running_loop().run_in_executor(
                self._encoder, model.encode, instances, parameters
            )
        else:
            features = model.encode(instances, parameters)
        output = await loaded.batcher.submit(features) if loaded.batcher is not None else model.run(features)
        result = model.decode(output, parameters)
        self._usage.add(tenant_id, "predictions", len(instances), endpoint)
        return {
            "endpoint": endpoint,
            "model": identity.model_name,
            "version": identity.version,
            **result,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    def _check_batch(self, instances: Any) -> None:
        if not isinstance(instances, list) or not instances:
            raise InvalidInput(
                "'instances' must be a non-empty list (one entry per thing to predict)",
                errors=[{"loc": ["body", "instances"], "msg": "empty or not a list"}],
            )
        if len(instances) > self._max_instances:
            raise PayloadTooLarge(
                f"{len(instances)} instances in one call; the limit is {self._max_instances}: split the batch",
                errors=[{"loc": ["body", "instances"], "msg": "too many instances"}],
            )

    def _resolve_route(self, tenant_id: str, endpoint: str) -> ModelIdentity:
        with session_scope(self._factory) as session:
            version = resolve_endpoint(session, tenant_id=tenant_id, name=endpoint)
            model = session.get(Model, version.model_id)
            assert model is not None
            return identity_of(version.id, model.name, version.version)

    async def _route(self, tenant_id: str, endpoint: str) -> ModelIdentity:
        # Keyed by the tenant's route generation: a request made after an endpoint change never joins
        # (or caches the answer of) a lookup that started before it.
        generation = self.routes.generation(tenant_id)

        async def resolve() -> ModelIdentity:
            identity = await run_in_threadpool(self._resolve_route, tenant_id, endpoint)
            self.routes.put(tenant_id, endpoint, identity, generation)
            return identity

        return await self._route_lookups.run((tenant_id, endpoint, generation), resolve)

    async def _load(self, identity: ModelIdentity) -> LoadedModel:
        model = await run_in_threadpool(self._read_model, identity)
        loaded, evicted = self.models.add(model)
        for old in evicted:
            if old.batcher is not None:
                asyncio.get_running_loop().create_task(old.batcher.close())
        return loaded

    def _read_model(self, identity: ModelIdentity) -> ServableModel:
        with session_scope(self._factory) as session:
            row = session.get(ModelVersion, identity.model_version_id)
            assert row is not None
            model = session.get(Model, row.model_id)
            assert model is not None
            family, digest = model.family, row.artifact_digest
            preprocessing, signature = row.preprocessing, row.signature
        return load_servable(family, identity, self._store.get(digest), preprocessing, signature)

    def invalidate_routes(self, tenant_id: str) -> None:
        self.routes.invalidate_tenant(tenant_id)

    async def close(self) -> None:
        for loaded in self.models.clear():
            if loaded.batcher is not None:
                await loaded.batcher.close()
        self._encoder.shutdown(wait=False, cancel_futures=True)
