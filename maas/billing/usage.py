"""Usage metering off the hot path: counts accumulate in memory and are flushed to the DB in batches.

The flush runs on a timer and on graceful shutdown, so a clean stop loses nothing; a crash loses at most
one flush interval of counts.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from maas.db.engine import session_scope
from maas.db.tables import UsageEvent

UsageKey = tuple[str, str, str | None]  # tenant, meter, resource


class UsageRecorder:
    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pending: defaultdict[UsageKey, float] = defaultdict(float)

    def add(self, tenant_id: str, meter: str, quantity: float, resource_id: str | None = None) -> None:
        with self._lock:
            self._pending[(tenant_id, meter, resource_id)] += quantity

    def flush(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(float)
        if not pending:
            return 0
        try:
            with session_scope(self._factory) as session:
                session.add_all(
                    UsageEvent(tenant_id=tenant, meter=meter, quantity=quantity, resource_id=resource)
                    for (tenant, meter, resource), quantity in pending.items()
                )
        except Exception:
            with self._lock:  # put the counts back: the next flush retries them
                for key, quantity in pending.items():
                    self._pending[key] += quantity
            raise
        return len(pending)


def usage_summary(session: Session, tenant_id: str) -> dict[str, float]:
    rows = session.execute(
        select(UsageEvent.meter, func.sum(UsageEvent.quantity))
        .where(UsageEvent.tenant_id == tenant_id)
        .group_by(UsageEvent.meter)
    )
    return {meter: float(total) for meter, total in rows}
