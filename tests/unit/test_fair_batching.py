"""Fairness between tenants on a shared model: the fair queue, the batcher's cost budget, embedding slices.

A tenant's 384-input embedding request made another tenant's one-line request on the platform model wait
9.3 s (the whole request ran as one batch). Here the batcher's ``process_batch`` is held at a gate, so each
test decides exactly what is queued while a batch runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from maas.serving.batcher import AdaptiveBatcher
from maas.serving.embeddings import CHUNK_ROWS, LoadedEmbedding, Rows, slices
from maas.serving.fair import FairQueue

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


def drain(queue: FairQueue[str]) -> list[str]:
    return [queue.pop() for _ in range(len(queue))]


# --- the fair queue ------------------------------------------------------------------------------------------


def test_one_key_is_fifo() -> None:
    queue: FairQueue[str] = FairQueue()
    for item in "abcde":
        queue.push(None, item)
    assert drain(queue) == list("abcde")


def test_a_newcomer_goes_next_whatever_the_backlog_of_another_key() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(12):
        queue.push("A", f"a{i}", 32)
    assert queue.pop() == "a0"  # in flight when B arrives
    queue.push("B", "b0", 1)
    assert queue.pop() == "b0"
    assert queue.pop() == "a1"
    queue.push("B", "b1", 1)  # B comes back while a2.. are queued: again next
    assert queue.pop() == "b1"
    assert drain(queue) == [f"a{i}" for i in range(2, 12)]


def test_two_backlogs_share_by_cost() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(4):
        queue.push("big", f"big{i}", 4)
    for i in range(8):
        queue.push("small", f"small{i}", 1)
    order = drain(queue)
    # 'small' gets about four 1-cost items through for each 4-cost item of 'big', and each key keeps its order.
    assert order[:6] == ["big0", "small0", "small1", "small2", "small3", "big1"]
    assert [item for item in order if item.startswith("big")] == [f"big{i}" for i in range(4)]
    assert [item for item in order if item.startswith("small")] == [f"small{i}" for i in range(8)]


def test_an_idle_key_banks_no_credit() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("A", "a0")
    queue.pop()
    for i in range(1, 6):
        queue.push("A", f"a{i}")
    for _ in range(3):
        queue.pop()  # A alone is served for a while
    queue.push("B", "b0")
    queue.push("B", "b1")
    queue.push("B", "b2")
    # B, idle until now, does not get three turns in a row for the time A was served alone: they alternate.
    assert drain(queue) == ["b0", "a4", "b1", "a5", "b2"]


def test_remove_if_and_accounting() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("A", "a0", 3)
    queue.push("A", "a1", 3)
    queue.push("B", "b0", 2)
    assert len(queue) == 3 and queue.cost == 8
    queue.remove_if(lambda item: item in {"a0", "b0"})
    assert len(queue) == 1 and queue.cost == 3
    assert queue.peek() == ("a1", 3)
    assert drain(queue) == ["a1"]
    with pytest.raises(IndexError):
        queue.pop()


def test_the_clock_table_does_not_grow_with_every_key_ever_seen() -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(1000):
        queue.push(f"tenant-{i}", i)
        queue.pop()
    queue.push("last", 0)
    queue.pop()
    assert len(queue._clocks) <= 2


def test_an_item_dropped_unserved_is_not_charged_to_its_key() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("A", "a0", 32)
    queue.push("B", "b0", 32)
    queue.push("B", "b1", 32)
    queue.push("A", "a1", 32)
    assert queue.discard() == "a0"  # its caller left: nothing ran for A
    assert len(queue) == 3 and queue.cost == 96
    assert drain(queue) == ["a1", "b0", "b1"]  # A was served no less than B: it keeps its turn


# --- the batcher with keys and a cost budget -----------------------------------------------------------------


class Gated:
    """process_batch: records each batch (lists of rows), answers each item with its rows' sums, and waits at a
    gate the test opens one batch at a time."""

    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.started = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)

    def __call__(self, items: list[list[int]]) -> list[list[int]]:
        self.batches.append([list(item) for item in items])
        self.started.release()
        assert self.gate.acquire(timeout=10), "the test never opened the gate"
        return [[value * 10 for value in item] for item in items]

    async def next_batch(self) -> list[list[int]]:
        assert await asyncio.to_thread(self.started.acquire, True, 10)
        return self.batches[-1]

    def release(self) -> None:
        self.gate.release()


def test_another_tenants_small_request_waits_for_one_slice_only() -> None:
    async def scenario() -> None:
        process = Gated()
        batcher: AdaptiveBatcher[list[int], list[int]] = AdaptiveBatcher(
            process, max_batch_size=64, max_wait_s=0, cost=len, max_batch_cost=4
        )
        big = [[i, i, i, i] for i in range(6)]  # six slices of 4 rows
        a = asyncio.create_task(batcher.submit_many(big, key="A"))
        assert await process.next_batch() == [[0, 0, 0, 0]]
        b = asyncio.create_task(batcher.submit([7], key="B"))
        await asyncio.sleep(0.01)
        process.release()
        # B's one row runs right after the slice in flight; A's next slice (4 rows) does not fit beside it.
        assert await process.next_batch() == [[7]]
        process.release()
        assert await b == [70]
        assert not a.done()
        for _ in range(5):
            await process.next_batch()
            process.release()
        assert await a == [[i * 10] * 4 for i in range(6)]
        assert [len(batch) for batch in process.batches] == [1] * 7
        await batcher.close()

    run(scenario())


def test_small_items_fill_a_batch_up_to_the_cost_budget() -> None:
    async def scenario() -> None:
        process = Gated()
        batcher: AdaptiveBatcher[list[int], list[int]] = AdaptiveBatcher(
            process, max_batch_size=64, max_wait_s=0, cost=len, max_batch_cost=4
        )
        first = asyncio.create_task(batcher.submit([0]))
        await process.next_batch()
        others = [asyncio.create_task(batcher.submit([i, i], key=f"t{i}")) for i in range(1, 4)]
        await asyncio.sleep(0.01)
        process.release()
        assert await process.next_batch() == [[1, 1], [2, 2]]  # 4 rows: the third item waits
        process.release()
        assert await process.next_batch() == [[3, 3]]
        process.release()
        assert await first == [0]
        assert [await task for task in others] == [[10, 10], [20, 20], [30, 30]]
        await batcher.close()

    run(scenario())


def test_an_item_over_the_budget_still_runs_alone() -> None:
    async def scenario() -> None:
        batcher: AdaptiveBatcher[list[int], int] = AdaptiveBatcher(
            lambda items: [len(item) for item in items], max_batch_size=8, max_wait_s=0, cost=len, max_batch_cost=2
        )
        assert await batcher.submit([1, 2, 3, 4, 5]) == 5
        await batcher.close()

    run(scenario())


def test_a_failing_slice_fails_the_call_and_drops_the_slices_not_run() -> None:
    async def scenario() -> None:
        process = Gated()
        calls: list[list[list[int]]] = []

        def failing(items: list[list[int]]) -> list[list[int]]:
            calls.append(items)
            if items == [[1]]:
                raise ValueError("slice 1 broke")
            return process(items)

        batcher: AdaptiveBatcher[list[int], list[int]] = AdaptiveBatcher(
            failing, max_batch_size=8, max_wait_s=0, cost=len, max_batch_cost=1
        )
        call = asyncio.create_task(batcher.submit_many([[0], [1], [2], [3]], key="A"))
        await process.next_batch()
        process.release()
        with pytest.raises(ValueError, match="slice 1 broke"):
            await call
        after = asyncio.create_task(batcher.submit([5]))
        await process.next_batch()
        process.release()
        assert await after == [50]
        assert calls == [[[0]], [[1]], [[5]]]  # slices 2 and 3 were dropped, never run
        await batcher.close()

    run(scenario())


def test_a_cancelled_caller_drops_its_queued_slices() -> None:
    async def scenario() -> None:
        process = Gated()
        batcher: AdaptiveBatcher[list[int], list[int]] = AdaptiveBatcher(
            process, max_batch_size=8, max_wait_s=0, cost=len, max_batch_cost=1
        )
        call = asyncio.create_task(batcher.submit_many([[0], [1], [2]], key="A"))
        await process.next_batch()
        call.cancel()
        await asyncio.sleep(0.01)
        process.release()
        with pytest.raises(asyncio.CancelledError):
            await call
        after = asyncio.create_task(batcher.submit([5]))
        assert await process.next_batch() == [[5]]  # slices 1 and 2 never ran
        process.release()
        assert await after == [50]
        await batcher.close()

    run(scenario())


def test_a_cancelled_item_taken_from_the_queue_does_not_cost_its_tenant_a_turn() -> None:
    async def scenario() -> None:
        batcher: AdaptiveBatcher[list[int], list[int]] = AdaptiveBatcher(
            Gated(), max_batch_size=8, max_wait_s=0, cost=len, max_batch_cost=4
        )
        futures = batcher._enqueue([[0, 0, 0, 0]], "A")
        futures += batcher._enqueue([[1, 1, 1, 1], [2, 2, 2, 2]], "B")
        futures += batcher._enqueue([[3, 3, 3, 3]], "A")
        futures[0].cancel()  # A's caller left before its item was taken
        assert [pending.item for pending in batcher._take_batch()] == [[3, 3, 3, 3]]
        assert [pending.item for pending in batcher._take_batch()] == [[1, 1, 1, 1]]
        assert batcher.queued == 1
        for future in futures:
            future.cancel()
        await batcher.close()

    run(scenario())


# --- embedding slices ----------------------------------------------------------------------------------------


class FakeModel:
    """Stands in for EmbeddingModel: a row's 'embedding' is (first id, length, 0, ...)."""

    dimensions = 4

    def embed(self, rows: Rows) -> np.ndarray:
        return np.array([[row[0], len(row), 0, 0] for row in rows], dtype=np.float32)


def test_slices_are_sorted_by_length_and_bounded() -> None:
    rows = [[i] * (1 + (i * 7) % 50) for i in range(100)]
    order, parts = slices(rows)
    assert [len(part) for part in parts] == [CHUNK_ROWS] * 3 + [100 - 3 * CHUNK_ROWS]
    flat = [row for part in parts for row in part]
    assert flat == [rows[i] for i in order]
    assert [len(row) for row in flat] == sorted(len(row) for row in rows)


def test_a_large_request_comes_back_whole_and_in_order() -> None:
    async def scenario() -> None:
        model = FakeModel()

        def process(items: list[Rows]) -> list[np.ndarray]:
            return [model.embed(item) for item in items]

        batcher: AdaptiveBatcher[Rows, np.ndarray] = AdaptiveBatcher(
            process, max_batch_size=64, max_wait_s=0, cost=len, max_batch_cost=CHUNK_ROWS
        )
        loaded = LoadedEmbedding(model=model, batcher=batcher)  # type: ignore[arg-type]
        rows = [[i] * (1 + (i * 13) % 40) for i in range(200)]
        small = [[7, 7]]
        big, alone = await asyncio.gather(loaded.embed(rows, tenant="A"), loaded.embed(small, tenant="B"))
        assert big.shape == (200, 4)
        assert big[:, 0].tolist() == list(range(200))
        assert big[:, 1].tolist() == [len(row) for row in rows]
        assert alone.tolist() == [[7, 2, 0, 0]]
        await batcher.close()

    run(scenario())
