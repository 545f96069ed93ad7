"""The app factory: nothing is opened at import time (STYLE habit 8)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from maas import __version__
from maas.api import health
from maas.api.json_body import parse_json_bodies
from maas.api.metrics import ApiMetrics
from maas.api.middleware import BodyLimit, RequestBodyLimits, RequestIdAndMetrics, UnexpectedErrors
from maas.api.native import datasets, endpoints, jobs, models, pretrained, tenants
from maas.api.openai import chat as openai_chat
from maas.api.openai import completions as openai_completions
from maas.api.openai import embeddings as openai_embeddings
from maas.api.openai import files as openai_files
from maas.api.openai import fine_tuning as openai_fine_tuning
from maas.api.openai import models as openai_models
from maas.api.problems import install_error_handlers
from maas.api.redaction import Redactor
from maas.api.state import AppState
from maas.auth.admin_key import ensure_admin_key
from maas.auth.cache import KeyCache
from maas.auth.secrets import hash_secret
from maas.billing.usage import UsageRecorder
from maas.config import Settings
from maas.data import blobs
from maas.db.engine import make_engine, make_session_factory, session_scope
from maas.db.migrate import upgrade_to_head
from maas.errors import Conflict
from maas.jobs.dispatcher import Dispatcher
from maas.jobs.executor import LocalSubprocessExecutor
from maas.registry import catalog
from maas.serving.predictor import PredictionService
from maas.storage import open_store

log = logging.getLogger("maas.api")

_USAGE_FLUSH_SECONDS = 5.0
# Multipart framing adds a little to the file itself; the file's own limit is checked in the route.
_MULTIPART_OVERHEAD = 64 * 1024


def _ensure_platform_tenant(factory: sessionmaker[Session]) -> None:
    try:
        with session_scope(factory) as session:
            catalog.ensure_platform_tenant(session)
    except Conflict:  # another API instance sharing the database created it at the same moment
        pass


def build_state(settings: Settings, metrics: ApiMetrics, *, run_jobs: bool = True) -> AppState:
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    upgrade_to_head(engine)
    factory = make_session_factory(engine)
    store = open_store(settings.resolved_storage_url)
    admin_secret, _ = ensure_admin_key(settings.admin_key, settings.admin_key_path)
    _ensure_platform_tenant(factory)
    usage = UsageRecorder(factory)
    predictor = PredictionService(
        factory=factory,
        store=store,
        usage=usage,
        max_instances=settings.max_batch_instances,
        route_ttl_seconds=settings.auth_cache_ttl_seconds,
        batch_max_size=settings.batch_max_size,
        batch_max_wait_s=settings.batch_max_wait_ms / 1000,
    )
    dispatcher = Dispatcher(settings, factory, LocalSubprocessExecutor(settings)) if run_jobs else None
    return AppState(
        settings=settings,
        engine=engine,
        factory=factory,
        store=store,
        admin_key_hash=hash_secret(admin_secret),
        keys=KeyCache(settings.auth_cache_ttl_seconds),
        usage=usage,
        predictor=predictor,
        dispatcher=dispatcher,
        metrics=metrics,
    )


async def _flush_usage_forever(usage: UsageRecorder) -> None:
    while True:
        await asyncio.sleep(_USAGE_FLUSH_SECONDS)
        try:
            await run_in_threadpool(usage.flush)
        except Exception:
            log.warning("usage flush failed; will retry", exc_info=True)


async def _collect_artifacts_forever(state: AppState) -> None:
    idle = state.settings.artifact_gc_seconds
    while True:
        await asyncio.sleep(idle)
        try:
            removed = await run_in_threadpool(blobs.sweep, state.factory, state.store, idle_seconds=idle)
            if removed:
                log.info("removed %d unreferenced artifact(s)", len(removed))
        except Exception:
            log.warning("artifact collection failed; will retry", exc_info=True)


async def _close_openai_services(app: FastAPI) -> None:
    """The /v1 routes create their serving services on first use (most servers never load a language
    model); whatever was created is closed here, so batchers and engine threads end with the server."""
    runtime = getattr(app.state, "maas_openai", None)
    if runtime is not None:
        await runtime.embeddings.close()
    generation = getattr(app.state, "maas_generation", None)
    if generation is not None:
        await run_in_threadpool(generation.close)


def create_app(settings: Settings, *, run_jobs: bool = True) -> FastAPI:
    """Build the ASGI app. ``run_jobs=False`` serves the API without starting the job dispatcher."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await run_in_threadpool(build_state, settings, metrics, run_jobs=run_jobs)
        app.state.maas = state
        if state.dispatcher is not None:
            state.dispatcher.start()
        flusher = asyncio.create_task(_flush_usage_forever(state.usage))
        collector = asyncio.create_task(_collect_artifacts_forever(state))
        # Everything loaded so far (pandas, scikit-learn, ONNX, SQLAlchemy: millions of objects) lives as
        # long as the process. Frozen, it is skipped by the collector: full collections no longer stall
        # every request in flight for 50-100 ms.
        gc.freeze()
        try:
            yield
        finally:
            for task in (flusher, collector):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await state.predictor.close()
            await _close_openai_services(app)
            if state.dispatcher is not None:
                await run_in_threadpool(state.dispatcher.stop)
            await run_in_threadpool(state.usage.flush)
            state.engine.dispose()

    app = FastAPI(
        title="MaaS",
        version=__version__,
        description="Self-hosted Model-as-a-Service: datasets, training jobs, model registry, endpoints.",
        lifespan=lifespan,
    )
    metrics = ApiMetrics()
    install_error_handlers(app, Redactor.for_settings(settings))
    # Routes are matched in order: the predict path's router goes first, so it is found soonest.
    for module in (endpoints, tenants, datasets, jobs, models):
        # Each router carries its full prefix, so a route's template (the metrics label) is its whole path.
        app.include_router(parse_json_bodies(module.router))
    app.include_router(parse_json_bodies(health.router))
    app.include_router(parse_json_bodies(openai_files.router))  # issue 4: fine-tuning files
    app.include_router(parse_json_bodies(openai_fine_tuning.router))  # issue 4: fine-tuning jobs
    for router in (openai_models.router, openai_embeddings.router, pretrained.router):  # issue 4: pretrained models
        app.include_router(parse_json_bodies(router))
    app.include_router(parse_json_bodies(openai_chat.router))  # issue 4: text generation
    app.include_router(parse_json_bodies(openai_completions.router))
    app.add_middleware(
        RequestBodyLimits,
        request=BodyLimit(settings.max_request_bytes, "MAAS_MAX_REQUEST_BYTES"),
        upload=BodyLimit(settings.max_upload_bytes, "MAAS_MAX_UPLOAD_BYTES", framing_allowance=_MULTIPART_OVERHEAD),
        upload_paths=frozenset({"/api/v1/datasets", "/api/v1/models/import", "/v1/files"}),
    )
    # The middleware added last runs first: RequestIdAndMetrics sets the request id before, and counts the status
    # after, the 500 that UnexpectedErrors answers an unexpected exception with.
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(RequestIdAndMetrics, metrics=metrics)
    return app
