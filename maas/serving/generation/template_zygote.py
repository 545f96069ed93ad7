"""The chat-template zygote and its workers: the processes side of ``template_worker`` (read its docstring).

Started by the server as ``python -m maas.serving.generation.template_zygote``, never by hand. The zygote
imports transformers' template module once and forks one worker per request on its control socket; a
worker renders conversations sent as JSON and answers JSON, under a memory limit and an alarm.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import struct
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

PID = struct.Struct("<i")  # a forked worker's pid, as the zygote answers it


@dataclass(frozen=True)
class ZygoteLimits:
    max_chars: int  # longest rendered text sent back
    memory_bytes: int  # address space a worker may add once forked
    hard_limit_s: float  # a render still running after this ends its worker (SIGALRM)


def _render(
    render: Any, request: tuple[str, list[dict[str, Any]], dict[str, Any]], limits: ZygoteLimits
) -> tuple[str, str]:
    source, messages, variables = request
    try:
        # What PreTrainedTokenizerBase.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # runs; our messages are already plain dicts of strings (its normalisation has nothing to do).
        rendered, _ = render(conversations=[messages], chat_template=source, add_generation_prompt=True, **variables)
    except MemoryError:
        return "error", f"the chat template used more than {limits.memory_bytes // (1024 * 1024)} MB of memory"
    except RecursionError:
        return "error", "the chat template recursed too deeply"
    except Exception as exc:  # jinja2's TemplateError (raise_exception, the sandbox), a template's TypeError
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        return "error", f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    text = str(rendered[0])
    if len(text) > limits.max_chars:
        return (
            "error",
            f"the chat template rendered {len(text):,} characters; at most {limits.max_chars:,} are accepted",
        )
    return "ok", text


def _serve(conn: Connection, render: Any, limits: ZygoteLimits) -> None:
    """A worker's loop: render each conversation it is sent, until the server closes the socket."""
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + limits.memory_bytes, size + limits.memory_bytes))
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        # SIGALRM's default action ends the process, even inside a long C call: a render that outlives its
        # budget twice over ends here if nobody killed it (the server itself was killed meanwhile).
        signal.setitimer(signal.ITIMER_REAL, limits.hard_limit_s)
        reply = _render(render, request, limits)
        signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            conn.send_bytes(json.dumps(reply).encode())  # ASCII: a lone surrogate a template made is sent too
        except OSError:
            return


def _zygote(control: socket.socket, limits: ZygoteLimits) -> None:
    """Fork one worker per request on ``control`` (a socket end sent along), answer its pid; end at EOF."""
    from transformers.utils.chat_template_utils import render_jinja_template

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    control.sendall(b"R")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1, 1)
        except OSError:
            return
        if not message or len(fds) != 1:
            return
        pid = os.fork()
        if pid == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _serve(Connection(fds[0]), render_jinja_template, limits)
            finally:
                os._exit(0)
        os.close(fds[0])
        control.sendall(PID.pack(pid))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="chat template zygote (started by the server, not by hand)")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--max-chars", type=int, required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--hard-limit-s", type=float, required=True)
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    _zygote(control, ZygoteLimits(args.max_chars, args.memory_bytes, args.hard_limit_s))


if __name__ == "__main__":
    main()
