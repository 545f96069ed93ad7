"""The order in which queued jobs are tried: round robin over tenants, oldest first within one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from maas.jobs.queue import fair_order

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_one_head_per_tenant_oldest_first_when_nobody_was_served() -> None:
    queued = [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A"), ("c1", "C")]
    assert fair_order(queued, {}, {}) == ["a1", "b1", "c1"]


def test_the_tenant_served_least_recently_goes_first() -> None:
    queued = [("a1", "A"), ("b1", "B")]
    assert fair_order(queued, {}, {"A": T0 + timedelta(minutes=5), "B": T0}) == ["b1", "a1"]
    assert fair_order(queued, {}, {"A": T0}) == ["b1", "a1"]  # B was never served


def test_a_tenant_with_jobs_running_waits_behind_one_without() -> None:
    queued = [("a1", "A"), ("b1", "B")]
    assert fair_order(queued, {"A": 1}, {"B": T0 + timedelta(hours=1)}) == ["b1", "a1"]
