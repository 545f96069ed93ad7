"""Chat templates of tenants render in worker processes, with a time budget, and are killed past it.

A chat template is a Jinja program the model brings. Jinja's sandbox stops it from reaching Python objects,
not from looping: three nested ``range(1000)`` loops run for minutes. Rendered in a thread, such a template
could not be stopped (a thread cannot be killed) and kept burning the CPU after its client had left; 41 of
them stalled the whole server for seconds. Here each render runs in one of a few worker processes:

- past the budget (``MAAS_CHAT_TEMPLATE_BUDGET_SECONDS``) the worker is killed (SIGKILL) and replaced, and
  the caller gets :class:`ChatTemplateTimedOut`; a caller that goes away (the client disconnected: its task
  is cancelled) kills its worker the same way, so no abandoned render keeps running;
- the worker renders exactly as ``tokenizer.apply_chat_template(..., tokenize=False)`` does, with
  transformers' own ``render_jinja_template`` (its ``ImmutableSandboxedEnvironment``, filters and globals),
  so prompts are byte-identical to the in-process rendering;
- workers are forked from a small process of our own (the *zygote*, ``template_zygote``) that imports
  transformers' template module once: a replacement is ready in milliseconds, not in the second an import
  costs. (multiprocessing's fork server would re-import the server's ``__main__`` in every worker.)
- workers start with no secret in their environment and ``/`` as working directory (``helper_process``);
- requests and replies are JSON, and a reply is read with a length bound, never unpickled: should a template
  escape Jinja's sandbox, unpickling its worker's reply would run its code in the server. A reply out of
  protocol (not JSON, the wrong shape, too long, or half a message) is a failed worker: it is killed and
  replaced, the caller gets :class:`ChatTemplateFailed`;
- a worker may use a bounded amount of memory (``RLIMIT_AS``: ``'x' * 10**10`` is a MemoryError, not an
  out-of-memory server), its output is bounded (``MAX_RENDERED_CHARS``), and it ends itself (SIGALRM) if a
  render outlives twice the budget, should the server have died without killing it;
- workers are handed out fairly between tenants (:class:`~maas.serving.fair.FairQueue`): one tenant's many
  slow templates hold back another tenant's render by at most one budget.

This module is light on the server's side: only the zygote and its workers import transformers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Hashable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from maas.serving.fair import FairQueue
from maas.serving.generation import template_zygote
from maas.serving.generation.template_zygote import PID, ZygoteLimits
from maas.serving.helper_process import HELPER_CWD, helper_environment

# Longer than any model's context can use (a 128k-token context is ~0.5 M characters); it bounds what a
# template can make the server read back and tokenize.
MAX_RENDERED_CHARS = 4 * 1024 * 1024
# Address space a worker may add to what it has once forked (the rendered text, Jinja's state).
WORKER_MEMORY_BYTES = 512 * 1024 * 1024
_START_TIMEOUT_S = 120.0  # the zygote imports transformers' template module once
_PIPE_CHUNK = 64 * 1024  # what a socket takes without blocking the writer
_REPLY_OVERHEAD = 64 * 1024  # an error's text, JSON's brackets and quotes
_JSON_BYTES_PER_CHAR = 12  # the longest escape of one character: a surrogate pair, "\\ud83d\\ude00"
_FAILED = "the chat template's worker process failed"


class ChatTemplateFailed(ValueError):
    """The model's chat template raised while rendering a conversation (its ``raise_exception``, e.g. "roles
    must alternate user/assistant", or a template the sandbox refuses): the request's or the model's fault."""


class ChatTemplateTimedOut(Exception):
    """The chat template did not finish within the budget; its worker was killed."""

    def __init__(self, budget_s: float) -> None:
        super().__init__(f"the chat template did not finish rendering within {budget_s:g} s")
        self.budget_s = budget_s


@dataclass(frozen=True)
class ChatTemplate:
    """A model's chat template and the variables ``apply_chat_template`` gives it (its special tokens)."""

    source: str
    variables: dict[str, Any] = field(default_factory=dict)


# --- the server's side ---------------------------------------------------------------------------------------


class _BadReply(Exception):
    """A worker answered something else than the protocol's JSON: it is not trusted any more."""


class _Worker:
    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        try:
            # A handle on this very process (not on whatever reuses its pid later): signals go to it or nowhere.
            self._pidfd = os.pidfd_open(pid)
        except OSError:
            conn.close()
            raise
        self.conn = conn

    async def receive(self, timeout: float, maxlength: int) -> tuple[str, str]:
        """The worker's reply; TimeoutError when none came in time, EOFError if the worker died, OSError if
        the reply was longer than ``maxlength``, :class:`_BadReply` if it is not the protocol's."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        readable: asyncio.Future[None] = loop.create_future()
        fd = self.conn.fileno()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await asyncio.wait_for(readable, timeout)
        finally:
            loop.remove_reader(fd)
        # Readable: the worker is writing its reply, or it is gone (EOFError). Read in a thread, within the
        # budget: a worker that sent half a message and stopped must not hold the event loop.
        data = await asyncio.wait_for(
            asyncio.to_thread(self.conn.recv_bytes, maxlength), max(deadline - loop.time(), 0.05)
        )
        try:
            reply = json.loads(data)
        except ValueError:
            raise _BadReply from None
        if not (
            isinstance(reply, list) and len(reply) == 2 and reply[0] in ("ok", "error") and isinstance(reply[1], str)
        ):
            raise _BadReply
        return str(reply[0]), reply[1]

    async def send(self, request: object) -> None:
        data = json.dumps(request).encode()
        if len(data) <= _PIPE_CHUNK:
            self.conn.send_bytes(data)
        else:  # the worker reads it as it comes, but megabytes are not written on the event loop
            await asyncio.to_thread(self.conn.send_bytes, data)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.close(self._pidfd)
        with contextlib.suppress(OSError):
            self.conn.close()


async def _to_the_end(future: asyncio.Future[Any]) -> asyncio.CancelledError | None:
    """Wait until ``future`` is done, even if the caller is cancelled meanwhile; that cancellation, if any."""
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError as exc:
            cancelled = exc
        except Exception:  # the future's own error: the caller looks at it
            break
    return cancelled


class _Zygote:
    """The process workers are forked from (see the module docstring)."""

    def __init__(self, process: subprocess.Popen[bytes], control: socket.socket) -> None:
        self.process = process
        self.control = control
        self.lock = asyncio.Lock()

    @classmethod
    def start(cls, limits: ZygoteLimits) -> _Zygote:
        """Blocking (seconds, the first import of transformers): call it in a thread."""
        ours, theirs = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            template_zygote.__name__,
            "--control-fd",
            str(theirs.fileno()),
            "--max-chars",
            str(limits.max_chars),
            "--memory-bytes",
            str(limits.memory_bytes),
            "--hard-limit-s",
            str(limits.hard_limit_s),
        ]
        process = subprocess.Popen(
            command,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            cwd=HELPER_CWD,
            env=helper_environment(),
        )
        theirs.close()
        ours.settimeout(_START_TIMEOUT_S)
        try:
            ready = ours.recv(1)
        except OSError:
            ready = b""
        if ready != b"R":
            ours.close()
            process.kill()
            process.wait()
            raise ChatTemplateFailed("the chat template worker process did not start")
        ours.settimeout(None)
        return cls(process, ours)

    def alive(self) -> bool:
        return self.process.poll() is None

    async def fork(self) -> _Worker:
        ours, theirs = socket.socketpair()

        def exchange() -> int:
            socket.send_fds(self.control, [b"F"], [theirs.fileno()])
            answer = b""
            while len(answer) < PID.size:
                chunk = self.control.recv(PID.size - len(answer))
                if not chunk:
                    raise ChatTemplateFailed("the chat template worker process did not start")
                answer += chunk
            (pid,) = PID.unpack(answer)
            return int(pid)

        async with self.lock:
            # The exchange runs to its end, and the lock is held until then, even for a caller cancelled
            # meanwhile (its client left): otherwise the next fork would read this one's pid, and the thread
            # would send a socket already closed.
            exchanged = asyncio.ensure_future(asyncio.to_thread(exchange))
            cancelled = await _to_the_end(exchanged)
            theirs.close()
            error = exchanged.exception()
            if error is not None:
                ours.close()
                # The control stream is out of step (half a pid read): this zygote forks no more.
                self.process.kill()
        if cancelled is not None:
            if error is None:
                with contextlib.suppress(OSError):  # forked for nobody
                    _Worker(exchanged.result(), Connection(ours.detach())).kill()
            raise cancelled
        if error is not None:
            if isinstance(error, ChatTemplateFailed):
                raise error
            raise ChatTemplateFailed("the chat template worker process did not start") from None
        try:
            return _Worker(exchanged.result(), Connection(ours.detach()))
        except OSError:  # the worker is gone already
            raise ChatTemplateFailed("the chat template worker process did not start") from None

    def stop(self) -> None:
        """Blocking: call it in a thread. Its idle workers end when their sockets close."""
        self.control.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class TemplateWorkers:
    """A pool of ``workers`` processes rendering chat templates within ``budget_s`` each (see module doc)."""

    def __init__(
        self,
        *,
        workers: int,
        budget_s: float,
        max_chars: int = MAX_RENDERED_CHARS,
        memory_bytes: int = WORKER_MEMORY_BYTES,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if budget_s <= 0:
            raise ValueError(f"budget_s must be positive, got {budget_s}")
        self.budget_s = budget_s
        self._workers = workers
        self._limits = ZygoteLimits(max_chars, memory_bytes, hard_limit_s=2 * budget_s + 1)
        self._reply_bytes = max_chars * _JSON_BYTES_PER_CHAR + _REPLY_OVERHEAD
        self._zygote: _Zygote | None = None
        self._zygote_lock = asyncio.Lock()
        self._idle: list[_Worker] = []
        self._running: set[_Worker] = set()
        self._starting = 0
        self._waiting: FairQueue[asyncio.Future[_Worker]] = FairQueue()
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self.killed = 0  # workers killed so far (budget passed or caller gone)

    def pids(self) -> list[int]:
        """The process ids of the live workers (the zygote's first)."""
        zygote = [self._zygote.process.pid] if self._zygote is not None else []
        return zygote + [worker.pid for worker in [*self._idle, *self._running]]

    async def render(self, template: ChatTemplate, messages: list[dict[str, Any]], *, tenant: Hashable) -> str:
        """The conversation rendered by ``template``, ready to be tokenized without special tokens.

        Raises :class:`ChatTemplateFailed` (the template raised, or used too much memory or output),
        :class:`ChatTemplateTimedOut` (past the budget: the worker was killed). A cancelled caller kills its
        worker too."""
        worker = await self._acquire(tenant)
        keep = False
        try:
            try:
                await worker.send([template.source, messages, template.variables])
                status, text = await worker.receive(self.budget_s, self._reply_bytes)
            except TimeoutError:
                raise ChatTemplateTimedOut(self.budget_s) from None
            except EOFError:
                raise ChatTemplateFailed("the chat template's worker process stopped while rendering") from None
            except (OSError, _BadReply):  # a reply too long, or not JSON of the protocol: never trusted
                raise ChatTemplateFailed(_FAILED) from None
            keep = True
            if status != "ok":
                raise ChatTemplateFailed(text)
            return str(text)
        finally:
            if keep:
                self._release(worker)
            else:
                self._discard(worker)

    async def close(self) -> None:
        self._closed = True
        while self._waiting:
            self._waiting.pop().cancel()
        if self._background:
            await asyncio.wait(self._background)
        await asyncio.to_thread(self.kill_all)

    def kill_all(self) -> None:
        """Blocking (the zygote is waited for): kill every worker and stop the zygote; for a shutdown."""
        self._closed = True
        for worker in [*self._idle, *self._running]:
            worker.kill()
        self._idle.clear()
        self._running.clear()
        if self._zygote is not None:
            self._zygote.stop()
            self._zygote = None

    # --- handing workers out ---------------------------------------------------------------------------------

    async def _acquire(self, tenant: Hashable) -> _Worker:
        if self._closed:
            raise ChatTemplateFailed("the server is shutting down")
        if self._idle:
            worker = self._idle.pop()
        elif len(self._running) + self._starting < self._workers:
            self._starting += 1
            try:
                worker = await self._spawn()
            finally:
                self._starting -= 1
        else:
            waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
            self._waiting.push(tenant, waiter)
            try:
                worker = await waiter
            except asyncio.CancelledError:
                self._waiting.remove_if(lambda queued: queued is waiter)
                if waiter.done() and not waiter.cancelled():
                    self._release(waiter.result())  # handed over just as this caller left: pass it on
                raise
        self._running.add(worker)
        return worker

    def _release(self, worker: _Worker) -> None:
        self._running.discard(worker)
        if self._closed:
            worker.kill()
            return
        while self._waiting:
            waiter, _ = self._waiting.peek()
            if waiter.done():  # its caller left: not charged to its tenant
                self._waiting.discard()
                continue
            self._waiting.pop().set_result(worker)
            return
        self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        """Kill a worker (stuck, or its caller left) and start its replacement at once."""
        self._running.discard(worker)
        worker.kill()
        self.killed += 1
        if not self._closed:
            self._starting += 1  # counted now: a caller arriving meanwhile does not start one more
            task = asyncio.get_running_loop().create_task(self._replace())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _replace(self) -> None:
        try:
            if self._closed:
                return
            worker = await self._spawn()
        except Exception as exc:
            while self._waiting:
                waiter = self._waiting.pop()
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        finally:
            self._starting -= 1
        self._release(worker)

    async def _spawn(self) -> _Worker:
        """A new worker. The pool may be closed (:meth:`kill_all`, in another thread) at any await here: then
        nothing it started is kept."""
        async with self._zygote_lock:
            if self._closed:
                raise ChatTemplateFailed("the server is shutting down")
            if self._zygote is None or not self._zygote.alive():
                dead, self._zygote = self._zygote, None
                if dead is not None:
                    await asyncio.to_thread(dead.stop)
                # Started to its end even if this caller is cancelled meanwhile (kept for the next one).
                started = asyncio.ensure_future(asyncio.to_thread(_Zygote.start, self._limits))
                cancelled = await _to_the_end(started)
                zygote = started.result()  # ChatTemplateFailed if it did not start
                if self._closed:
                    await asyncio.to_thread(zygote.stop)
                    raise ChatTemplateFailed("the server is shutting down")
                self._zygote = zygote
                if cancelled is not None:
                    raise cancelled
            zygote = self._zygote
        worker = await zygote.fork()
        if self._closed:
            worker.kill()
            raise ChatTemplateFailed("the server is shutting down")
        return worker
