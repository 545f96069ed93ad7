"""The adaptive batcher on its own: scheduling, error fan-out, draining, result routing.

Timing-sensitive cases are made deterministic with a gate: ``process_batch`` blocks on a
``threading.Event`` so the test decides exactly which items are queued while a batch runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from maas.errors import Unavailable
from maas.serving.batcher import AdaptiveBatcher, BatcherClosed, BatchResultMismatch

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


class Recorder:
    """A process_batch that records each batch, doubles each item, and can be held at a gate."""

    def __init__(self, *, gated: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        self.started.set()
        assert self.gate.wait(timeout=10), "the test never opened the gate"
        return [item * 2 for item in items]

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 10)
        self.started.clear()


async def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


async def submit_all(batcher: AdaptiveBatcher[int, int], items: list[int]) -> list[asyncio.Task[int]]:
    tasks = [asyncio.create_task(batcher.submit(item)) for item in items]
    await wait_until(lambda: batcher.queued == len(items))
    return tasks


def test_concurrency_one_adds_no_wait() -> None:
    recorder = Recorder()

    async def scenario() -> list[float]:
        batcher = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=5.0)
        durations = []
        for item in range(20):
            started = time.monotonic()
            assert await batcher.submit(item) == item * 2
            durations.append(time.monotonic() - started)
        await batcher.close()
        return durations

    durations = run(scenario())
    assert recorder.batches == [[item] for item in range(20)]
    # max_wait_s is 5 s: a single request must never pay any of it.
    assert max(durations) < 0.5


def test_process_batch_runs_off_the_event_loop() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = AdaptiveBatcher(recorder, max_batch_size=4, max_wait_s=0.0, name="m1")
        await batcher.submit(1)
        await batcher.close()

    run(scenario())
    assert recorder.threads and all(name.startswith("batcher-m1") for name in recorder.threads)


def test_concurrent_submits_are_merged() -> None:
    recorder = Recorder(gated=True)

    async def scenario() -> list[int]:
        batcher = AdaptiveBatcher(recorder, max_batch_size=32, max_wait_s=0.0)
        first = asyncio.create_task(batcher.submit(0))
        await recorder.wait_started()
        rest = await submit_all(batcher, [1, 2, 3, 4, 5])
        recorder.gate.set()
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return results

    assert run(scenario()) == [0, 2, 4, 6, 8, 10]
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]


def test_max_batch_size_is_respected() -> None:
    recorder = Recorder(gated=True)

    async def scenario() -> list[int]:
        batcher = AdaptiveBatcher(recorder, max_batch_size=4, max_wait_s=0.0)
        first = asyncio.create_task(batcher.submit(0))
        await recorder.wait_started()
        rest = await submit_all(batcher, list(range(1, 11)))
        recorder.gate.set()
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return results

    assert run(scenario()) == [item * 2 for item in range(11)]
    assert recorder.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


def test_max_wait_fills_a_partial_batch() -> None:
    recorder = Recorder(gated=True)

    async def scenario() -> list[int]:
        batcher = AdaptiveBatcher(recorder, max_batch_size=4, max_wait_s=5.0)
        first = asyncio.create_task(batcher.submit(0))
        await recorder.wait_started()
        early = await submit_all(batcher, [1, 2])
        recorder.gate.set()
        # Two items are queued (more than one, fewer than four): the batcher waits for more.
        await asyncio.sleep(0.05)
        late = [asyncio.create_task(batcher.submit(item)) for item in [3, 4]]
        started = time.monotonic()
        results = await asyncio.gather(first, *early, *late)
        # The batch filled up to max_batch_size, so it went without waiting out the 5 s.
        assert time.monotonic() - started < 2.0
        await batcher.close()
        return results

    assert run(scenario()) == [0, 2, 4, 6, 8]
    assert recorder.batches == [[0], [1, 2, 3, 4]]


def test_single_queued_item_does_not_wait() -> None:
    recorder = Recorder(gated=True)

    async def scenario() -> float:
        batcher = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=5.0)
        first = asyncio.create_task(batcher.submit(0))
        await recorder.wait_started()
        (second,) = await submit_all(batcher, [1])
        recorder.gate.set()
        started = time.monotonic()
        await asyncio.gather(first, second)
        elapsed = time.monotonic() - started
        await batcher.close()
        return elapsed

    assert run(scenario()) < 2.0
    assert recorder.batches == [[0], [1]]


def test_a_failing_batch_fails_each_caller() -> None:
    calls: list[list[str]] = []
    gate = threading.Event()
    started = threading.Event()

    def process(items: list[str]) -> list[str]:
        calls.append(items)
        started.set()
        gate.wait(timeout=10)
        if "bad" in items:
            raise ValueError("the model rejected the batch")
        return [item.upper() for item in items]

    async def scenario() -> list[BaseException | str]:
        batcher = AdaptiveBatcher(process, max_batch_size=8, max_wait_s=0.0)
        first = asyncio.create_task(batcher.submit("ok"))
        await asyncio.to_thread(started.wait, 10)
        failing = [asyncio.create_task(batcher.submit(item)) for item in ["a", "bad", "c"]]
        await wait_until(lambda: batcher.queued == 3)
        gate.set()
        results = await asyncio.gather(first, *failing, return_exceptions=True)
        # The batcher survives a failed batch.
        assert await batcher.submit("after") == "AFTER"
        await batcher.close()
        return results

    first, *failing = run(scenario())
    assert first == "OK"
    assert len(failing) == 3
    for outcome in failing:
        assert isinstance(outcome, ValueError)
        assert str(outcome) == "the model rejected the batch"
    assert calls == [["ok"], ["a", "bad", "c"], ["after"]]


@pytest.mark.parametrize(
    "bad_result",
    [
        pytest.param(lambda items: items[:-1], id="too-few"),
        pytest.param(lambda items: [*items, 0], id="too-many"),
        pytest.param(tuple, id="not-a-list"),
    ],
)
def test_a_wrong_length_result_fails_each_caller(bad_result: Callable[[list[int]], Any]) -> None:
    gate = threading.Event()
    started = threading.Event()
    batch_number = 0

    def process(items: list[int]) -> Any:
        nonlocal batch_number
        batch_number += 1
        started.set()
        gate.wait(timeout=10)
        return items if batch_number == 1 else bad_result(items)

    async def scenario() -> list[BaseException | int]:
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(process, max_batch_size=8, max_wait_s=0.0)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.to_thread(started.wait, 10)
        rest = [asyncio.create_task(batcher.submit(item)) for item in [1, 2, 3]]
        await wait_until(lambda: batcher.queued == 3)
        gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await batcher.close()
        return results

    first, *rest = run(scenario())
    assert first == 0
    assert len(rest) == 3
    for outcome in rest:
        assert isinstance(outcome, BatchResultMismatch)
        assert "got 3 items" in str(outcome)


def test_close_drains_then_refuses() -> None:
    recorder = Recorder(gated=True)

    async def scenario() -> list[int]:
        batcher = AdaptiveBatcher(recorder, max_batch_size=2, max_wait_s=0.0)
        first = asyncio.create_task(batcher.submit(0))
        await recorder.wait_started()
        rest = await submit_all(batcher, [1, 2, 3])
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0.01)
        assert batcher.closed
        assert not closing.done()
        with pytest.raises(BatcherClosed, match="is closed"):
            await batcher.submit(99)
        recorder.gate.set()
        await closing
        assert all(task.done() for task in [first, *rest])
        with pytest.raises(BatcherClosed):
            await batcher.submit(100)
        return [task.result() for task in [first, *rest]]

    assert run(scenario()) == [0, 2, 4, 6]
    assert recorder.batches == [[0], [1, 2], [3]]


def test_batcher_closed_is_an_unavailable_domain_error() -> None:
    assert issubclass(BatcherClosed, Unavailable)


def test_close_without_any_submit() -> None:
    async def scenario() -> None:
        batcher = AdaptiveBatcher(Recorder(), max_batch_size=2, max_wait_s=0.0)
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(1)

    run(scenario())


def test_results_go_to_the_right_caller() -> None:
    recorder = Recorder(gated=True)

    async def scenario() -> tuple[list[int], list[int]]:
        batcher = AdaptiveBatcher(recorder, max_batch_size=16, max_wait_s=0.0)
        first = asyncio.create_task(batcher.submit(1000))
        await recorder.wait_started()
        items = [7, 3, 9, 1, 4, 4, 0, 12]
        tasks = await submit_all(batcher, items)
        recorder.gate.set()
        results = await asyncio.gather(*tasks)
        assert await first == 2000
        await batcher.close()
        return items, results

    items, results = run(scenario())
    assert results == [item * 2 for item in items]
    assert recorder.batches[1] == items


def test_many_concurrent_callers_each_get_their_own_result() -> None:
    def process(items: list[int]) -> list[int]:
        time.sleep(0.002)
        return [item * item for item in items]

    batch_sizes: list[int] = []

    def recording(items: list[int]) -> list[int]:
        batch_sizes.append(len(items))
        return process(items)

    async def scenario() -> list[int]:
        batcher = AdaptiveBatcher(recording, max_batch_size=8, max_wait_s=0.001)
        results = await asyncio.gather(*(batcher.submit(item) for item in range(200)))
        await batcher.close()
        return list(results)

    assert run(scenario()) == [item * item for item in range(200)]
    assert max(batch_sizes) <= 8
    assert max(batch_sizes) > 1
    assert sum(batch_sizes) == 200


def test_cancelled_caller_is_skipped() -> None:
    recorder = Recorder(gated=True)

    async def scenario() -> list[int]:
        batcher = AdaptiveBatcher(recorder, max_batch_size=8, max_wait_s=0.0)
        first = asyncio.create_task(batcher.submit(0))
        await recorder.wait_started()
        tasks = await submit_all(batcher, [1, 2, 3])
        tasks[1].cancel()
        await asyncio.sleep(0)
        recorder.gate.set()
        results = await asyncio.gather(first, tasks[0], tasks[2])
        assert tasks[1].cancelled()
        await batcher.close()
        return list(results)

    assert run(scenario()) == [0, 2, 6]
    assert recorder.batches == [[0], [1, 3]]


def test_external_executor_is_used_and_left_open() -> None:
    recorder = Recorder()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="shared")

    async def scenario() -> None:
        batcher = AdaptiveBatcher(recorder, max_batch_size=2, max_wait_s=0.0, executor=executor)
        assert await batcher.submit(5) == 10
        await batcher.close()

    try:
        run(scenario())
        assert all(name.startswith("shared") for name in recorder.threads)
        # The batcher does not shut down an executor it was given.
        assert executor.submit(lambda: 1).result(timeout=5) == 1
    finally:
        executor.shutdown()


@pytest.mark.parametrize(("size", "wait"), [(0, 0.0), (1, -0.1)])
def test_invalid_settings_are_refused(size: int, wait: float) -> None:
    with pytest.raises(ValueError, match="max_"):
        AdaptiveBatcher(Recorder(), max_batch_size=size, max_wait_s=wait)


def test_cheap_batches_run_inline_on_the_event_loop_and_costly_ones_in_the_thread() -> None:
    recorder = Recorder()

    async def scenario() -> tuple[list[int], set[str]]:
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(
            recorder, max_batch_size=8, max_wait_s=0, run_inline=lambda items: sum(items) < 100, name="inline"
        )
        loop_thread = threading.current_thread().name
        results = [await batcher.submit(1), await batcher.submit(500)]
        await batcher.close()
        return results, {loop_thread}

    results, loop_threads = run(scenario())
    assert results == [2, 1000]
    # One batch ran on the loop's own thread, the costly one in the batcher's worker thread.
    assert loop_threads <= recorder.threads
    assert len(recorder.threads) == 2


def test_an_inline_batch_that_raises_fails_its_callers() -> None:
    def explode(items: list[int]) -> list[int]:
        raise ValueError("bad batch")

    async def scenario() -> None:
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(
            explode, max_batch_size=4, max_wait_s=0, run_inline=lambda items: True
        )
        with pytest.raises(ValueError, match="bad batch"):
            await batcher.submit(1)
        await batcher.close()

    run(scenario())


def test_a_cheap_item_waits_behind_a_running_batch_instead_of_jumping_it() -> None:
    recorder = Recorder(gated=True)

    async def scenario() -> list[list[int]]:
        batcher: AdaptiveBatcher[int, int] = AdaptiveBatcher(
            recorder, max_batch_size=8, max_wait_s=0, run_inline=lambda items: sum(items) < 100
        )
        costly = asyncio.create_task(batcher.submit(500))
        await recorder.wait_started()
        cheap = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)
        assert recorder.batches == [[500]] and not cheap.done()
        recorder.gate.set()
        assert await costly == 1000 and await cheap == 2
        await batcher.close()
        return recorder.batches

    assert run(scenario()) == [[500], [1]]
