"""Concurrent cache misses share one computation (one DB query, one model load)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from maas.singleflight import SingleFlight


def test_concurrent_callers_share_one_computation() -> None:
    calls = 0

    async def scenario() -> list[int]:
        flight: SingleFlight[int] = SingleFlight()

        async def compute() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            return 42

        results = await asyncio.gather(*(flight.run("route", compute) for _ in range(32)))
        await asyncio.sleep(0)  # the finished computation is forgotten on the next loop turn
        assert flight.in_flight() == 0
        return list(results)

    assert asyncio.run(scenario()) == [42] * 32
    assert calls == 1


def test_each_key_computes_separately_and_later_calls_compute_again() -> None:
    seen: list[str] = []

    async def scenario() -> None:
        flight: SingleFlight[str] = SingleFlight()

        def compute_for(key: str) -> Callable[[], Coroutine[Any, Any, str]]:
            async def compute() -> str:
                seen.append(key)
                await asyncio.sleep(0)
                return key.upper()

            return compute

        assert await asyncio.gather(flight.run("a", compute_for("a")), flight.run("b", compute_for("b"))) == ["A", "B"]
        await asyncio.sleep(0)
        assert await flight.run("a", compute_for("a")) == "A"

    asyncio.run(scenario())
    assert seen == ["a", "b", "a"]


def test_an_error_reaches_every_waiter_and_is_not_cached() -> None:
    attempts = 0

    async def scenario() -> None:
        flight: SingleFlight[int] = SingleFlight()

        async def failing() -> int:
            nonlocal attempts
            attempts += 1
            await asyncio.sleep(0.01)
            raise LookupError("no such endpoint")

        outcomes = await asyncio.gather(*(flight.run("k", failing) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(o, LookupError) for o in outcomes)
        await asyncio.sleep(0)
        with pytest.raises(LookupError):
            await flight.run("k", failing)

    asyncio.run(scenario())
    assert attempts == 2


def test_a_cancelled_caller_does_not_cancel_the_others() -> None:
    async def scenario() -> int:
        flight: SingleFlight[int] = SingleFlight()
        release = asyncio.Event()

        async def compute() -> int:
            await release.wait()
            return 7

        first = asyncio.create_task(flight.run("k", compute))
        second = asyncio.create_task(flight.run("k", compute))
        await asyncio.sleep(0)
        first.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(scenario()) == 7
