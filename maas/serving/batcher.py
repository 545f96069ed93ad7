"""Adaptive batching: concurrent requests to one model are merged into one runtime call.

The batcher only schedules. Items and results are opaque to it: merging the items of a batch into
one input (concatenating instance arrays) and splitting the output back into one result per item is
the job of the ``process_batch`` callable the caller hands in.

Scheduling policy (latency first):

1. One batch is in flight at a time per batcher. The runtime (ONNX Runtime) already uses its own
   intra-op threads, so running two batches side by side would only make them fight for cores.
2. When nothing is running and an item arrives, it is dispatched at once, alone: at concurrency 1
   the batcher adds no wait.
3. Items that arrive while a batch runs are queued. When the batch finishes, the queue (up to
   ``max_batch_size`` items, and up to ``max_batch_cost`` by the optional ``cost(item)``) forms the next
   batch, always at least one item.
4. The queue is fair between keys (``submit(item, key=tenant)``; see :class:`~maas.serving.fair.FairQueue`):
   the key served least so far (by cost) goes first, items of one key stay in order. With a cost budget,
   one tenant's large request, submitted as slices (:meth:`AdaptiveBatcher.submit_many`), makes another
   tenant's small request wait for at most the slice in flight, not for the whole request. Without keys it
   is a FIFO queue.
5. ``max_wait_s`` is an extra wait to fill a batch, and it applies only when the queue holds more than
   one item and fewer than ``max_batch_size`` (and less than ``max_batch_cost``): the batcher then waits
   until the queue is full or ``max_wait_s`` (monotonic clock) has passed since it started forming the
   batch, whichever comes first. A single queued item never waits. ``max_wait_s=0`` switches the extra
   wait off.
6. ``process_batch`` is synchronous and runs in a thread (the given executor, or a dedicated single
   thread owned by the batcher), so the event loop is never blocked; except a batch for which the
   optional ``run_inline(items)`` says yes, which runs on the event loop itself. That is for batches so
   cheap (a small MLP on a few rows: microseconds) that the hop to a thread and back would cost
   more than the work. Such an item submitted to an idle batcher (nothing queued, nothing running)
   runs at once in the caller's coroutine, without a hand-off to the batcher's task.
7. ``process_batch`` must return exactly one result per item, in order. If it raises, every caller
   of the batch gets that exception; if it returns the wrong number of results, every caller gets
   :class:`BatchResultMismatch`.
8. A caller that is cancelled (its client went away) before its item is dispatched is dropped from
   the queue; one cancelled while its batch runs is simply not answered.
9. :meth:`AdaptiveBatcher.close` stops accepting items (``submit`` then raises
   :class:`BatcherClosed`), finishes everything already queued, and releases the batcher's own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from maas.errors import Unavailable
from maas.serving.fair import FairQueue

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class BatcherClosed(Unavailable):
    """The batcher was closed (the model is being unloaded); the item was not accepted."""


class BatchResultMismatch(RuntimeError):
    """``process_batch`` returned a number of results different from the number of items it got.

    This is a bug in the model's batch function, not in the caller's input, so it is not a
    :class:`~maas.errors.MaasError`: the API renders it as a generic internal error.
    """


@dataclass(slots=True)
class _Pending(Generic[ItemT, ResultT]):
    item: ItemT
    future: asyncio.Future[ResultT]


class AdaptiveBatcher(Generic[ItemT, ResultT]):
    """Queue items from many coroutines and run them through ``process_batch`` in batches.

    See the module docstring for the exact scheduling policy. The batcher binds to the event loop of
    its first :meth:`submit`; use one batcher per loop.
    """

    def __init__(
        self,
        process_batch: Callable[[list[ItemT]], list[ResultT]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        executor: concurrent.futures.Executor | None = None,
        run_inline: Callable[[list[ItemT]], bool] | None = None,
        cost: Callable[[ItemT], int] | None = None,
        max_batch_cost: int | None = None,
        name: str = "",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_batch_cost is not None and max_batch_cost < 1:
            raise ValueError(f"max_batch_cost must be at least 1, got {max_batch_cost}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        self._process_batch = process_batch
        self._run_inline = run_inline
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._cost = cost or _one
        self._max_batch_cost = max_batch_cost
        self._name = name
        self._owns_executor = executor is None
        self._executor: concurrent.futures.Executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"batcher-{name}" if name else "batcher"
        )
        self._queue: FairQueue[_Pending[ItemT, ResultT]] = FairQueue()
        self._busy = False  # a batch is running (in the executor): new items must queue behind it
        self._closed = False
        # Created on the first submit, inside the running loop.
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """Items waiting for a batch (not counting the batch in flight)."""
        return len(self._queue)

    async def submit(self, item: ItemT, *, key: Hashable = None) -> ResultT:
        """Queue ``item`` (in the fair share of ``key``) and return its result once its batch has run.

        Raises :class:`BatcherClosed` after :meth:`close`, the exception ``process_batch`` raised for
        the batch, or :class:`BatchResultMismatch`.
        """
        self._check_open()
        if not self._busy and not self._queue and self._run_inline is not None and self._run_inline([item]):
            # Idle, and the item is cheap: run it now in the caller. Handing it to the worker task would
            # only add two turns of the event loop, and nothing else could join its batch meanwhile.
            return self._run_alone(item)
        (future,) = self._enqueue([item], key)
        # If this coroutine is cancelled, awaiting cancels the future too; the worker skips it.
        return await future

    async def submit_many(self, items: Sequence[ItemT], *, key: Hashable = None) -> list[ResultT]:
        """Queue the slices of one request together and return their results in order.

        Each slice is an item of its own (other keys' items are taken between them, see the fair queue); the
        first failing slice fails the call, and the slices not run yet are dropped, as when the caller is
        cancelled."""
        self._check_open()
        futures = self._enqueue(items, key)
        try:
            return [await future for future in futures]
        finally:
            for future in futures:
                future.cancel()  # a no-op for those done; the rest are dropped from the queue

    def _check_open(self) -> None:
        if self._closed:
            raise BatcherClosed(f"the batcher{self._label()} is closed and accepts no new items")

    def _enqueue(self, items: Sequence[ItemT], key: Hashable) -> list[asyncio.Future[ResultT]]:
        loop = asyncio.get_running_loop()
        wakeup = self._ensure_worker()
        futures: list[asyncio.Future[ResultT]] = []
        for item in items:
            future: asyncio.Future[ResultT] = loop.create_future()
            self._queue.push(key, _Pending(item, future), self._cost(item))
            futures.append(future)
        wakeup.set()
        return futures

    def _run_alone(self, item: ItemT) -> ResultT:
        results = self._process_batch([item])
        if not isinstance(results, list) or len(results) != 1:
            got = f"{len(results)} results" if isinstance(results, list) else type(results).__name__
            raise BatchResultMismatch(f"process_batch of batcher{self._label()} got 1 item but returned {got}")
        return results[0]

    async def close(self) -> None:
        """Refuse new items, finish every queued one, then release the batcher's own thread."""
        self._closed = True
        if self._worker is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await asyncio.shield(self._worker)
        if self._owns_executor:
            # Nothing runs in it any more (the worker has drained), so this does not block.
            self._executor.shutdown(wait=False)

    def _label(self) -> str:
        return f" '{self._name}'" if self._name else ""

    def _ensure_worker(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._run(self._wakeup), name=f"batcher{self._label()}"
            )
        return self._wakeup

    async def _run(self, wakeup: asyncio.Event) -> None:
        try:
            while True:
                self._drop_cancelled()
                if not self._queue:
                    if self._closed:
                        return
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                await self._fill(wakeup)
                batch = self._take_batch()
                if batch:
                    await self._dispatch(batch)
                    # Let the callers just answered run first: one whose slice failed drops its other slices
                    # (submit_many) before the next batch is taken.
                    await asyncio.sleep(0)
        finally:
            # Only reached with items left if the worker itself was cancelled (loop shutdown).
            while self._queue:
                pending = self._queue.pop()
                if not pending.future.done():
                    pending.future.set_exception(
                        BatcherClosed(f"the batcher{self._label()} stopped before running this item")
                    )

    def _partly_filled(self) -> bool:
        """2 or more items queued, and room for more in a batch."""
        below_cost = self._max_batch_cost is None or self._queue.cost < self._max_batch_cost
        return 1 < len(self._queue) < self._max_batch_size and below_cost

    async def _fill(self, wakeup: asyncio.Event) -> None:
        """Wait up to ``max_wait_s`` for a partly filled queue to fill up."""
        if self._max_wait_s <= 0 or self._closed:
            return
        deadline = time.monotonic() + self._max_wait_s
        while self._partly_filled() and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=remaining)
            self._drop_cancelled()

    def _drop_cancelled(self) -> None:
        self._queue.remove_if(lambda pending: pending.future.done())

    def _take_batch(self) -> list[_Pending[ItemT, ResultT]]:
        """The next batch in fair order, within ``max_batch_size`` items and ``max_batch_cost``."""
        batch: list[_Pending[ItemT, ResultT]] = []
        total = 0
        while self._queue and len(batch) < self._max_batch_size:
            pending, cost = self._queue.peek()
            if pending.future.done():  # its caller went away: dropped, not charged to its key
                self._queue.discard()
                continue
            if batch and self._max_batch_cost is not None and total + cost > self._max_batch_cost:
                break
            batch.append(self._queue.pop())
            total += cost
        return batch

    async def _dispatch(self, batch: list[_Pending[ItemT, ResultT]]) -> None:
        items = [pending.item for pending in batch]
        loop = asyncio.get_running_loop()
        self._busy = True
        try:
            if self._run_inline is not None and self._run_inline(items):
                results = self._process_batch(items)
            else:
                results = await loop.run_in_executor(self._executor, self._process_batch, items)
        except asyncio.CancelledError:
            _fail_all(batch, BatcherClosed(f"the batcher{self._label()} stopped while running this item"))
            raise
        except Exception as exc:
            _fail_all(batch, exc)
            return
        finally:
            self._busy = False
        if not isinstance(results, list) or len(results) != len(batch):
            got = f"{len(results)} results" if isinstance(results, list) else type(results).__name__
            _fail_all(
                batch,
                BatchResultMismatch(
                    f"process_batch of batcher{self._label()} got {len(batch)} items but returned {got}"
                ),
            )
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)


def _one(_: object) -> int:
    return 1


def _fail_all(batch: list[_Pending[ItemT, ResultT]], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
