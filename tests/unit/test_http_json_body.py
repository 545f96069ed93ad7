"""JSON bodies: parsed off the loop with the same result, and every body that does not parse is a 422 (issue 8)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError

from maas.api.json_body import OFF_LOOP_BYTES, declares_json, parse_body, parse_yielding


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2, "b": [1.5, -2e10, 1e999, true, null, "x"], "c": {"d": {}}}',  # duplicate keys: last wins
        '[NaN, Infinity, -Infinity, 12345678901234567890, "\\u00e9\\ud83d\\ude00"]',
        '"just a string"',
        "3",
    ],
)
def test_the_yielding_parser_gives_what_json_loads_gives(text: str) -> None:
    assert repr(parse_yielding(text.encode())) == repr(json.loads(text))


def test_a_large_body_parsed_in_a_thread_lets_another_thread_run() -> None:
    # The point of the hooks: json.loads in a thread held the GIL for the whole body (0.9 s for 12 MB here).
    body = ("[" + ",".join(["1.5"] * 3_000_000) + "]").encode()
    gaps: list[float] = []
    done = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        time.sleep(0.05)
        started = time.perf_counter()
        parsed = parse_yielding(body)
        took = time.perf_counter() - started
    finally:
        done.set()
        ticker.join()
    assert len(parsed) == 3_000_000
    assert max(gaps) < max(0.25, took / 4), (max(gaps), took)


def _refusal(body: bytes) -> dict[str, Any]:
    with pytest.raises(RequestValidationError) as refused:
        asyncio.run(parse_body(body))
    (error,) = refused.value.errors()
    assert error["type"] == "json_invalid"
    return dict(error)


@pytest.mark.parametrize("padding", [0, OFF_LOOP_BYTES])  # parsed on the loop, and in a thread
def test_every_body_that_does_not_parse_is_a_json_error_saying_why(padding: int) -> None:
    space = b" " * padding
    assert "nested too deeply" in _refusal(space + b"[" * 100_000 + b"]" * 100_000)["ctx"]["error"]
    assert "UTF-8" in _refusal(space + b'"\xff\xfe"')["ctx"]["error"]
    assert "digits" in _refusal(space + b"1" * 5000)["ctx"]["error"]
    invalid = _refusal(space + b"{nope")
    assert invalid["loc"] == ("body", padding + 1) and invalid["ctx"]["error"].startswith("Expecting")


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/merge-patch+json", True),
        (None, False),
        ("text/plain", False),
        ("multipart/form-data; boundary=x", False),
    ],
)
def test_which_bodies_are_json(content_type: str | None, expected: bool) -> None:
    assert declares_json(content_type) is expected
