"""Texts that reach a user outside the error handlers carry our words, never a library's (issue 8): a stream's
error chunk, a job's stored failure reason, a Parquet file's refusal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pyarrow as pa
import pytest
from starlette.requests import Request

from maas.api.openai.completions import sse
from maas.data.formats import parquet_failure, read_table
from maas.data.images import load_image_dataset
from maas.errors import InvalidInput
from maas.jobs import training_run
from maas.jobs.states import JobState
from maas.redaction import SERVER_PATH, Redactor

LEAK = f"cannot open {tempfile.gettempdir()}/maas-upload-x1/model/weights.bin: postgresql://maas:pw@db/maas"


async def _stream_body(request: Request, chunks: AsyncIterator[dict[str, Any]]) -> list[bytes]:
    response = sse(request, chunks)
    return [part if isinstance(part, bytes) else part.encode() async for part in response.body_iterator]


def test_a_stream_that_fails_midway_sends_a_generic_error_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield {"choices": [{"index": 0, "text": "Hello"}]}
        raise RuntimeError(LEAK)

    request = Request({"type": "http", "method": "POST", "path": "/v1/completions", "headers": []})
    request.state.request_id = "req-42"
    with caplog.at_level(logging.ERROR, logger="maas.api"):
        events = asyncio.run(_stream_body(request, chunks()))
    assert events[-1] == b"data: [DONE]\n\n"
    error = orjson.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["type"] == "server_error" and "req-42" in error["message"]
    assert "maas-upload" not in error["message"] and "pw" not in error["message"]
    # Logged once, with the traceback and the id the user sees.
    logged = [record for record in caplog.records if record.exc_info]
    assert len(logged) == 1 and "req-42" in logged[0].getMessage()


@pytest.fixture
def attempt(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[training_run._Attempt, list[tuple[str, str]]]]:
    """An attempt whose trainer is the test's, recording what it would store instead of writing a database."""
    recorded: list[tuple[str, str]] = []

    class Recording(training_run._Attempt):
        def finish(self, state: JobState, *, reason: str) -> None:
            recorded.append((state.value, reason))

        def note(self, message: str) -> None:
            recorded.append(("note", message))

    @contextlib.contextmanager
    def no_session(factory: Any) -> Iterator[None]:
        yield None

    monkeypatch.setattr(training_run, "session_scope", no_session)
    monkeypatch.setattr(training_run, "owned_job", lambda *_, **__: SimpleNamespace(family="tabular-mlp"))
    redact = Redactor([tempfile.gettempdir()])
    yield Recording(factory=None, store=None, job_id="job_abc", owner="w1", redact=redact), recorded  # type: ignore[arg-type]


def _train_raising(
    monkeypatch: pytest.MonkeyPatch, attempt: training_run._Attempt, error: BaseException
) -> training_run.TrainedModel | None:
    def trainer(*_: Any) -> Any:
        raise error

    monkeypatch.setattr(training_run, "load_trainer", lambda family: trainer)
    return attempt.train(None, {}, Path("."), lambda: False)  # type: ignore[arg-type]


def test_an_unexpected_training_error_is_stored_in_our_words_and_logged(
    monkeypatch: pytest.MonkeyPatch,
    attempt: tuple[training_run._Attempt, list[tuple[str, str]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    run, recorded = attempt
    with caplog.at_level(logging.ERROR, logger="maas.training_run"):
        assert _train_raising(monkeypatch, run, KeyError(LEAK)) is None
    [(state, reason)] = recorded
    assert state == JobState.FAILED.value
    assert "KeyError" in reason and "job_abc" in reason and "server log" in reason
    assert "maas-upload" not in reason and "pw" not in reason
    assert [record.exc_info is not None for record in caplog.records] == [True]


def test_a_retried_attempts_note_carries_no_library_text(
    monkeypatch: pytest.MonkeyPatch, attempt: tuple[training_run._Attempt, list[tuple[str, str]]]
) -> None:
    run, recorded = attempt
    with pytest.raises(OSError, match="maas-upload"):
        _train_raising(monkeypatch, run, OSError(28, "No space left on device", LEAK))
    [(kind, message)] = recorded
    assert kind == "note" and "will be retried" in message and "OSError" in message
    assert "maas-upload" not in message and tempfile.gettempdir() not in message


def test_a_domain_errors_own_reason_is_kept_with_paths_hidden(
    monkeypatch: pytest.MonkeyPatch, attempt: tuple[training_run._Attempt, list[tuple[str, str]]]
) -> None:
    run, recorded = attempt
    detail = f"training diverged in epoch 3: the loss became nan; lower learning_rate (see {tempfile.gettempdir()}/x)"
    _train_raising(monkeypatch, run, InvalidInput(detail))
    assert recorded == [
        (
            JobState.FAILED.value,
            f"training diverged in epoch 3: the loss became nan; lower learning_rate (see {SERVER_PATH})",
        )
    ]


@pytest.mark.parametrize("content", [b"PAR1" + b"\x00" * 64 + b"PAR1", b"PAR1garbage"])
def test_a_corrupt_parquet_file_is_refused_in_our_words(content: bytes) -> None:
    for load in (lambda: read_table(content, "d.parquet"), lambda: load_image_dataset(content, "image-parquet")):
        with pytest.raises(InvalidInput) as refused:
            load()
        detail = refused.value.detail
        assert detail.startswith("the Parquet file cannot be read: it ")
        # Arrow's own words (sizes, footers, offsets) stay out.
        assert "footer" not in detail and "bytes" not in detail, detail


def test_the_parquet_reason_follows_the_exception_class() -> None:
    assert "not support" in parquet_failure(pa.ArrowNotImplementedError("codec LZO"))
    assert "truncated" in parquet_failure(OSError("Unexpected end of stream /srv/x"))
    for error in (pa.ArrowInvalid("ARROW"), ValueError("ARROW"), TypeError("ARROW"), OSError("ARROW /srv/x")):
        assert "ARROW" not in parquet_failure(error) and "/srv" not in parquet_failure(error)
