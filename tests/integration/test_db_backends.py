"""The DB layer on both real backends: SQLite (file, WAL) and the machine's PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from maas.auth import service as auth
from maas.auth.roles import Role
from maas.db.engine import make_engine, make_session_factory, session_scope
from maas.db.migrate import is_at_head, upgrade_to_head
from maas.db.tables import Job, utcnow
from maas.errors import Conflict, NotFound
from maas.jobs import queue
from maas.jobs.states import JobState
from maas.registry.service import NewVersion, register_version, resolve, set_alias


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'maas.db'}")
        upgrade_to_head(eng)
        yield eng
        eng.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"maas_test_{secrets.token_hex(4)}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    eng = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        upgrade_to_head(eng)
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def _tenant(factory: sessionmaker[Session], name: str) -> str:
    with session_scope(factory) as session:
        tenant, _ = auth.create_tenant(session, name=name)
        return tenant.id


def _job(factory: sessionmaker[Session], tenant_id: str) -> str:
    with session_scope(factory) as session:
        job = Job(id=f"job_{secrets.token_hex(6)}", tenant_id=tenant_id, family="tabular-mlp", spec={}, state="queued")
        session.add(job)
        return job.id


def test_migrations_reach_head(engine: Engine) -> None:
    assert is_at_head(engine)


def test_keys_resolve_until_revoked_and_are_stored_hashed(factory: sessionmaker[Session]) -> None:
    tenant_id = _tenant(factory, "acme")
    with session_scope(factory) as session:
        issued = auth.create_key(session, tenant_id=tenant_id, name="app", role=Role.CONSUMER)
    with session_scope(factory) as session:
        principal = auth.resolve_key(session, issued.secret)
        assert principal is not None and principal.role is Role.CONSUMER and principal.tenant_id == tenant_id
        assert all(issued.secret not in str(k.secret_hash) for k in auth.list_keys(session, tenant_id))
        auth.revoke_key(session, tenant_id=tenant_id, key_id=issued.key.id)
    with session_scope(factory) as session:
        assert auth.resolve_key(session, issued.secret) is None


def test_duplicate_tenant_is_a_conflict(factory: sessionmaker[Session]) -> None:
    _tenant(factory, "twice")
    with pytest.raises(Conflict):
        _tenant(factory, "twice")


def test_revoking_another_tenants_key_is_not_found(factory: sessionmaker[Session]) -> None:
    owner, other = _tenant(factory, "owner"), _tenant(factory, "other")
    with session_scope(factory) as session:
        issued = auth.create_key(session, tenant_id=owner, name="k", role=Role.DEVELOPER)
    with pytest.raises(NotFound), session_scope(factory) as session:
        auth.revoke_key(session, tenant_id=other, key_id=issued.key.id)


def test_a_job_is_claimed_once_and_requeued_when_its_lease_expires(factory: sessionmaker[Session]) -> None:
    tenant_id = _tenant(factory, "jobs")
    job_id = _job(factory, tenant_id)
    with session_scope(factory) as session:
        claimed = queue.claim_next(session, owner="lease_a", lease_seconds=30)
        assert claimed is not None and claimed.id == job_id
    with session_scope(factory) as session:
        assert queue.claim_next(session, owner="lease_b", lease_seconds=30) is None
    with session_scope(factory) as session:
        assert queue.requeue_expired(session, max_attempts=3) == []
        assert queue.requeue_expired(session, max_attempts=3, now=utcnow() + timedelta(seconds=31)) == [job_id]
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == JobState.QUEUED.value and job.attempts == 1
        with pytest.raises(queue.LeaseLost):
            queue.renew_lease(session, job_id=job_id, owner="lease_a", lease_seconds=30)


def _claim_and_finish(factory: sessionmaker[Session], owner: str) -> str:
    with session_scope(factory) as session:
        job = queue.claim_next(session, owner=owner, lease_seconds=30)
        assert job is not None
        queue.transition(session, job, JobState.SUCCEEDED)
        return job.id


def test_a_tenant_with_many_queued_jobs_does_not_starve_another(factory: sessionmaker[Session]) -> None:
    busy, quiet = _tenant(factory, "busy"), _tenant(factory, "quiet")
    busy_jobs = [_job(factory, busy) for _ in range(4)]
    quiet_job = _job(factory, quiet)  # queued last
    order = [_claim_and_finish(factory, f"lease_{n}") for n in range(5)]
    # The busy tenant's oldest job goes first (nobody was served yet); the quiet one's right after.
    assert order == [busy_jobs[0], quiet_job, *busy_jobs[1:]]


def test_a_backlog_of_hundreds_does_not_hide_another_tenants_job(factory: sessionmaker[Session]) -> None:
    busy, quiet = _tenant(factory, "backlog"), _tenant(factory, "late")
    with session_scope(factory) as session:
        session.add_all(
            Job(id=f"job_b{n:04d}", tenant_id=busy, family="tabular-mlp", spec={}, state="queued") for n in range(600)
        )
    quiet_job = _job(factory, quiet)
    order = [_claim_and_finish(factory, f"lease_{n}") for n in range(2)]
    assert quiet_job in order


def test_a_job_that_keeps_dying_fails_after_max_attempts(factory: sessionmaker[Session]) -> None:
    tenant_id = _tenant(factory, "dying")
    job_id = _job(factory, tenant_id)
    for attempt in range(2):
        with session_scope(factory) as session:
            assert queue.claim_next(session, owner=f"lease_{attempt}", lease_seconds=30) is not None
        with session_scope(factory) as session:
            queue.requeue_expired(session, max_attempts=2, now=utcnow() + timedelta(minutes=5))
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == JobState.FAILED.value and "2 attempts" in (job.error or "")


def _new_version(name: str) -> NewVersion:
    return NewVersion(
        model_name=name,
        family="tabular-mlp",
        task="classification",
        artifact_digest="0" * 64,
        artifact_format="onnx",
        preprocessing={},
        signature={},
        metrics={"accuracy": 0.9},
        hyperparameters={},
        lineage={},
    )


def test_versions_count_up_per_tenant_and_aliases_resolve(factory: sessionmaker[Session]) -> None:
    first, second = _tenant(factory, "first"), _tenant(factory, "second")
    with session_scope(factory) as session:
        assert register_version(session, tenant_id=first, new=_new_version("m")).version == 1
        assert register_version(session, tenant_id=first, new=_new_version("m")).version == 2
        assert register_version(session, tenant_id=second, new=_new_version("m")).version == 1
        set_alias(session, tenant_id=first, name="m", alias="production", version=1)
    with session_scope(factory) as session:
        assert resolve(session, tenant_id=first, name="m", version=None, alias="production").version == 1
        assert resolve(session, tenant_id=first, name="m", version=None, alias=None).version == 2
        with pytest.raises(NotFound):
            resolve(session, tenant_id=second, name="m", version=None, alias="production")
