"""The tokenizer of an embedding model, in the server's process or, when its file is large, in a helper process.

``tokenizers`` holds the GIL while it parses ``tokenizer.json`` (about 20 ms a MB here), even when called from a
thread: a tenant's 63 MB file stalled every request of the server for 6-7 s while it loaded (plus 4 s of
``json.loads`` to read one setting). So:

- a file up to ``IN_PROCESS_MAX_BYTES`` (all-MiniLM-L6-v2's is 0.45 MB: ~20 ms) loads here, as before;
- a larger one loads in a helper process (``python -m maas.serving.tokenizer_host``) that then tokenizes for
  the server, one round trip per request (a fraction of a millisecond besides the tokenization itself).
  Its calls block: the server makes them from a thread, never on the event loop (``in_process`` says which).
  What the helper sends back is JSON, read with a length bound, never a pickle: should a tenant's file ever
  escape the tokenizer there, unpickling its reply would run its code in the server. A reply that is not
  what was asked (not JSON, the wrong shape, too long) is a failed helper: it is killed, the call fails.

Both give what the embedding runtime needs: token ids without truncation or padding, the vocabulary size,
the padding id the file names, and the special tokens framing a text.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from tokenizers import Tokenizer

from maas.errors import InvalidInput
from maas.serving.helper_process import HELPER_CWD, helper_environment

IN_PROCESS_MAX_BYTES = 2 * 1024 * 1024
_LOAD_TIMEOUT_S = 300.0
_FACTS_REPLY_BYTES = 1024 * 1024
# A reply's bound, from its texts: a token per byte of UTF-8 at most (byte-level BPE), 10 bytes of JSON a token
# id, and room for the special tokens around each text.
_REPLY_BYTES = 1024 * 1024
_REPLY_BYTES_PER_CHAR = 4 * 10
_REPLY_BYTES_PER_TEXT = 4096
_FAILED = "the model's tokenizer process failed"

Rows = list[list[int]]


@dataclass(frozen=True)
class TokenizerFacts:
    vocab_size: int
    pad_id: int
    prefix: list[int]  # the special tokens put before a text ([CLS] for BERT)
    suffix: list[int]  # ... and after it ([SEP])


class TextTokenizer(Protocol):
    facts: TokenizerFacts
    in_process: bool  # False: tokenize() blocks on another process; never call it on the event loop

    def tokenize(self, texts: list[str]) -> Rows: ...

    def close(self) -> None: ...


def _prepare(tokenizer: Tokenizer) -> TokenizerFacts:
    """Our own policy, whatever the file says: no silent truncation, no padding (the runtime pads per chunk)."""
    padding = tokenizer.padding or {}
    tokenizer.no_truncation()
    tokenizer.no_padding()
    probe = tokenizer.encode("a")
    mask = probe.special_tokens_mask
    first = next((i for i, special in enumerate(mask) if not special), len(mask))
    last = max((i for i, special in enumerate(mask) if not special), default=first - 1)
    return TokenizerFacts(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        pad_id=int(padding.get("pad_id", 0)),
        prefix=list(probe.ids[:first]),
        suffix=list(probe.ids[last + 1 :]),
    )


def _parse(tokenizer_json: bytes) -> Tokenizer:
    try:
        return Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot read
        raise InvalidInput("the model's tokenizer.json could not be loaded by the tokenizers library") from exc


class _BadReply(Exception):
    """The helper answered something else than the protocol's JSON: it is not trusted any more."""


def _encode(message: object) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def _reply_limit(texts: list[str]) -> int:
    return _REPLY_BYTES + sum(len(text) for text in texts) * _REPLY_BYTES_PER_CHAR + len(texts) * _REPLY_BYTES_PER_TEXT


def _int_list(value: Any) -> list[int]:
    if not isinstance(value, list) or not all(type(item) is int for item in value):
        raise _BadReply
    return value


class LocalTokenizer:
    in_process = True

    def __init__(self, tokenizer_json: bytes) -> None:
        self._tokenizer = _parse(tokenizer_json)
        self.facts = _prepare(self._tokenizer)

    def tokenize(self, texts: list[str]) -> Rows:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]

    def close(self) -> None:
        pass


class HostedTokenizer:
    """A tokenizer loaded and run by a helper process; blocking calls, one at a time.

    A helper that dies is started again once per call; one that answers out of protocol is killed and the call
    fails (:class:`~maas.errors.InvalidInput`); the next call starts a new one."""

    in_process = False

    def __init__(self, tokenizer_json: bytes) -> None:
        self._json = tokenizer_json
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self.facts = self._start()

    def _command(self, fd: int) -> list[str]:
        return [sys.executable, "-m", __name__, "--fd", str(fd)]

    def _start(self) -> TokenizerFacts:
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            self._command(theirs.fileno()),
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            cwd=HELPER_CWD,
            env=helper_environment(),  # no secret for a tenant's file to reach
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send_bytes(self._json)
        if not self._conn.poll(_LOAD_TIMEOUT_S):
            self._stop(kill=True)
            raise InvalidInput(f"the model's tokenizer.json did not load within {_LOAD_TIMEOUT_S:g} s")
        try:
            status, value = self._recv(_FACTS_REPLY_BYTES)
            if status != "ok":
                self._stop()
                raise InvalidInput(str(value))
            if not isinstance(value, dict):
                raise _BadReply
            vocab_size, pad_id = value.get("vocab_size"), value.get("pad_id")
            if type(vocab_size) is not int or type(pad_id) is not int:
                raise _BadReply
            return TokenizerFacts(vocab_size, pad_id, _int_list(value.get("prefix")), _int_list(value.get("suffix")))
        except (_BadReply, EOFError, OSError):
            self._stop(kill=True)
            raise InvalidInput(_FAILED) from None

    def _recv(self, maxlength: int) -> tuple[str, Any]:
        """The helper's reply; EOFError or OSError if it is gone, :class:`_BadReply` if it is not the protocol's."""
        assert self._conn is not None
        data = self._conn.recv_bytes(maxlength)  # OSError past maxlength
        try:
            reply = json.loads(data)
        except ValueError:
            raise _BadReply from None
        if not (isinstance(reply, list) and len(reply) == 2 and reply[0] in ("ok", "error")):
            raise _BadReply
        return str(reply[0]), reply[1]

    def tokenize(self, texts: list[str]) -> Rows:
        with self._lock:
            for attempt in range(2):
                try:
                    if self._conn is None:
                        self._start()
                    return self._call(texts)
                except (EOFError, OSError):
                    # The helper died (killed by an operator, say), or its reply was too long: start another
                    # once, then give up.
                    self._stop(kill=True)
                    if attempt:
                        raise InvalidInput(_FAILED) from None
                except _BadReply:
                    self._stop(kill=True)
                    raise InvalidInput(_FAILED) from None
            raise AssertionError("unreachable")

    def _call(self, texts: list[str]) -> Rows:
        assert self._conn is not None
        self._conn.send_bytes(_encode(texts))
        status, value = self._recv(_reply_limit(texts))
        if status != "ok":
            raise InvalidInput(str(value))
        if not isinstance(value, list) or len(value) != len(texts):
            raise _BadReply
        return [_int_list(row) for row in value]

    def _stop(self, *, kill: bool = False) -> None:
        """End the helper: it ends when its socket closes, or is killed (``kill``: it is not trusted)."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
        if self._process is not None:
            if kill:
                self._process.kill()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def close(self) -> None:
        self._stop()


def load_tokenizer(tokenizer_json: bytes) -> TextTokenizer:
    """In this process for a small file, in a helper process for a large one (see the module docstring)."""
    if len(tokenizer_json) > IN_PROCESS_MAX_BYTES:
        return HostedTokenizer(tokenizer_json)
    return LocalTokenizer(tokenizer_json)


# --- the helper process ------------------------------------------------------------------------------------


def _host(conn: Connection) -> None:
    try:
        tokenizer = _parse(conn.recv_bytes())
        conn.send_bytes(_encode(["ok", asdict(_prepare(tokenizer))]))
    except InvalidInput as exc:
        conn.send_bytes(_encode(["error", exc.detail]))
        return
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            reply: list[Any] = ["ok", [encoding.ids for encoding in tokenizer.encode_batch(json.loads(data))]]
        except Exception as exc:  # not a list of strings: the server's bug, said without the library's text
            reply = ["error", f"the tokenizer could not tokenize this input ({type(exc).__name__})"]
        conn.send_bytes(_encode(reply))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="tokenizer helper (started by the server, not by hand)")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    _host(Connection(args.fd))


if __name__ == "__main__":
    main()
