"""Queue operations on the ``jobs`` table: claim with a lease, heartbeat, finish, requeue the dead.

Claims and lease renewals are compare-and-set UPDATEs, so several dispatchers (API instances) can share
one database without taking the same job twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from maas.db.tables import Job, JobEvent, utcnow
from maas.jobs.states import JobState, check_transition


class LeaseLost(Exception):
    """The job's lease now belongs to someone else (or to nobody): stop working on it."""


def append_event(session: Session, job_id: str, kind: str, payload: dict[str, Any]) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, payload=payload))


def transition(session: Session, job: Job, target: JobState, **detail: Any) -> None:
    check_transition(JobState(job.state), target)
    job.state = target.value
    if target.is_terminal:
        job.finished_at = utcnow()
        job.lease_owner = None
        job.lease_expires_at = None
    append_event(session, job.id, "state", {"state": target.value, **detail})


def fair_order(
    queued: list[tuple[str, str]], running_per_tenant: dict[str, int], last_start_per_tenant: dict[str, datetime]
) -> list[str]:
    """Queued job ids (given oldest first, as ``(job_id, tenant_id)``) in the order to try them.

    Round robin over tenants: fewest jobs running first, then the tenant served least recently, and for
    each tenant only its oldest job. A tenant that queues a hundred jobs delays another tenant's job by one
    job at most."""
    first_of_tenant: dict[str, str] = {}
    for job_id, tenant_id in queued:
        first_of_tenant.setdefault(tenant_id, job_id)
    position = {job_id: index for index, (job_id, _) in enumerate(queued)}
    never = datetime.min.replace(tzinfo=UTC)

    def turn(item: tuple[str, str]) -> tuple[int, datetime, int]:
        tenant_id, job_id = item
        return running_per_tenant.get(tenant_id, 0), last_start_per_tenant.get(tenant_id, never), position[job_id]

    return [job_id for _, job_id in sorted(first_of_tenant.items(), key=turn)]


def claim_next(session: Session, *, owner: str, lease_seconds: float) -> Job | None:
    """Take the next queued job in fair order (see :func:`fair_order`), or None. The caller commits."""
    # Each tenant's oldest queued job(s), however many jobs any tenant has queued.
    oldest = (
        select(Job.tenant_id, func.min(Job.created_at).label("first"))
        .where(Job.state == JobState.QUEUED.value)
        .group_by(Job.tenant_id)
        .subquery()
    )
    queued = session.execute(
        select(Job.id, Job.tenant_id)
        .join(oldest, (Job.tenant_id == oldest.c.tenant_id) & (Job.created_at == oldest.c.first))
        .where(Job.state == JobState.QUEUED.value)
        .order_by(Job.created_at, Job.id)
    ).all()
    if not queued:
        return None
    tenants = {tenant_id for _, tenant_id in queued}
    running = session.execute(
        select(Job.tenant_id, func.count())
        .where(Job.state == JobState.RUNNING.value, Job.tenant_id.in_(tenants))
        .group_by(Job.tenant_id)
    ).all()
    last_started = session.execute(
        select(Job.tenant_id, func.max(Job.started_at)).where(Job.tenant_id.in_(tenants)).group_by(Job.tenant_id)
    ).all()
    candidates = fair_order(
        [(job_id, tenant_id) for job_id, tenant_id in queued],
        {tenant_id: int(count) for tenant_id, count in running},
        {tenant_id: _aware(moment) for tenant_id, moment in last_started if moment is not None},
    )
    now = utcnow()
    for job_id in candidates[:5]:
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
            .values(
                state=JobState.RUNNING.value,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=Job.attempts + 1,
                started_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            job = session.get(Job, job_id, populate_existing=True)
            assert job is not None
            append_event(session, job.id, "state", {"state": JobState.RUNNING.value, "attempt": job.attempts})
            return job
    return None


def _aware(moment: datetime) -> datetime:
    """UTC-aware, whatever the driver gives back for an aggregate of the column."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def renew_lease(session: Session, *, job_id: str, owner: str, lease_seconds: float) -> bool:
    """Extend the lease; returns whether cancellation was requested. Raises LeaseLost."""
    renewed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.state == JobState.RUNNING.value)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    if renewed.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(job_id)
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def owned_job(session: Session, *, job_id: str, owner: str) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.lease_owner != owner or job.state != JobState.RUNNING.value:
        raise LeaseLost(job_id)
    return job


def release_for_retry(session: Session, job: Job, *, reason: str, max_attempts: int) -> None:
    """A worker died: requeue to resume from the checkpoint, or fail once attempts are used up."""
    if job.attempts >= max_attempts:
        job.error = f"gave up after {job.attempts} attempts; last: {reason}"
        transition(session, job, JobState.FAILED, reason=job.error)
        return
    job.lease_owner = None
    job.lease_expires_at = None
    transition(session, job, JobState.QUEUED, reason=reason)


def requeue_expired(session: Session, *, max_attempts: int, now: datetime | None = None) -> list[str]:
    """Requeue running jobs whose worker stopped heartbeating. Returns their ids."""
    moment = now or utcnow()
    expired = session.scalars(
        select(Job).where(Job.state == JobState.RUNNING.value, Job.lease_expires_at < moment)
    ).all()
    for job in expired:
        release_for_retry(
            session, job, reason="the worker stopped heartbeating (lease expired)", max_attempts=max_attempts
        )
    return [job.id for job in expired]
