"""Everything the lifespan opens, handed to routes through ``request.app.state.maas``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from maas.api.metrics import ApiMetrics
from maas.auth.cache import KeyCache
from maas.auth.roles import Principal
from maas.billing.usage import UsageRecorder
from maas.config import Settings
from maas.db.engine import session_scope
from maas.jobs.dispatcher import Dispatcher
from maas.serving.predictor import PredictionService
from maas.singleflight import SingleFlight
from maas.storage import ArtifactStore


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    store: ArtifactStore
    admin_key_hash: str
    keys: KeyCache
    usage: UsageRecorder
    predictor: PredictionService
    dispatcher: Dispatcher | None
    metrics: ApiMetrics
    # Concurrent requests with the same uncached key share one database lookup.
    key_lookups: SingleFlight[Principal | None] = field(default_factory=SingleFlight)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction that is committed before the route builds its response."""
        with session_scope(self.factory) as session:
            yield session
