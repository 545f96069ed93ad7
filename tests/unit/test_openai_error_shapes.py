"""/v1 answers every error in OpenAI's envelope, also those raised before a route runs (body limits)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from maas.api.middleware import BodyLimit, RequestBodyLimits
from maas.api.openai.chat_schemas import ChatCompletionRequest, CompletionRequest
from maas.api.openai.errors import from_validation_errors, is_openai_path, openai_error
from maas.api.openai.schemas import EmbeddingRequest


def _call_with_big_body(path: str) -> tuple[int, dict[bytes, bytes], Any]:
    async def never_called(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the body is over the limit: the app must not run")

    app = RequestBodyLimits(
        never_called,
        request=BodyLimit(100, "MAAS_MAX_REQUEST_BYTES"),
        upload=BodyLimit(1000, "MAAS_MAX_UPLOAD_BYTES"),
        upload_paths=frozenset(),
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"x" * 101, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", b"101")]}
    asyncio.run(app(scope, receive, send))
    start, body = sent
    return start["status"], dict(start["headers"]), json.loads(body["body"])


def test_a_body_over_the_limit_on_v1_is_an_openai_error() -> None:
    # It was problem+json on /v1 too: the SDK's APIStatusError then had no error.message to show.
    status, headers, body = _call_with_big_body("/v1/chat/completions")
    assert status == 413
    assert headers[b"content-type"] == b"application/json"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "MAAS_MAX_REQUEST_BYTES" in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"


def test_a_body_over_the_limit_on_the_native_api_stays_problem_json() -> None:
    status, headers, body = _call_with_big_body("/api/v1/endpoints/x/predict")
    assert status == 413
    assert headers[b"content-type"] == b"application/problem+json"
    assert body["status"] == 413 and "MAAS_MAX_REQUEST_BYTES" in body["detail"]


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        (EmbeddingRequest, '{"model": "m", "input": ["fine", "\\ud800"]}'),
        (CompletionRequest, '{"model": "m", "prompt": "a \\udfff b"}'),
        (ChatCompletionRequest, '{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'),
        (
            ChatCompletionRequest,
            '{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x\\udc00"}]}]}',
        ),
    ],
)
def test_a_lone_surrogate_is_refused_by_the_schema(schema: type[BaseModel], body: str) -> None:
    # Valid JSON, but no character: the tokenizer raised a TypeError, a 500 on all three routes. FastAPI parses
    # the body with json.loads (which keeps the surrogate), then validates the object: so does this test.
    with pytest.raises(ValidationError, match="lone UTF-16 surrogate"):
        schema.model_validate(json.loads(body))


def test_a_surrogate_pair_is_a_character_and_accepted() -> None:
    request = EmbeddingRequest.model_validate(json.loads('{"model": "m", "input": "\\ud83d\\ude00 ok"}'))
    assert request.input == "\U0001f600 ok"


def _error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.body)["error"]
    return body


def test_a_method_not_allowed_is_the_callers_error_not_the_servers() -> None:
    # 405 was typed "server_error" (the fallback for any status not listed).
    assert _error(openai_error(405, "Method Not Allowed"))["type"] == "invalid_request_error"
    assert _error(openai_error(502, "bad gateway"))["type"] == "server_error"


def test_a_body_that_is_not_json_names_no_field() -> None:
    # FastAPI's loc is ("body", <offset>): the answer named param "1" and said "1: JSON decode error".
    error = _error(from_validation_errors([{"loc": ["body", 1], "msg": "JSON decode error", "type": "json_invalid"}]))
    assert error["param"] is None and error["code"] == "invalid_json"
    assert error["message"] == "the request body is not valid JSON"


def test_a_missing_body_is_named_body() -> None:
    error = _error(from_validation_errors([{"loc": ["body"], "msg": "Field required", "type": "missing"}]))
    assert error["message"] == "the request is invalid: body: Field required" and error["param"] is None


def test_v1_itself_is_an_openai_path() -> None:
    # GET /v1 (no trailing slash) answered a problem+json 404; /v1x and /api/v1 are not OpenAI's.
    assert is_openai_path("/v1") and is_openai_path("/v1/") and is_openai_path("/v1/models")
    assert not is_openai_path("/v1x") and not is_openai_path("/api/v1/models") and not is_openai_path("/v2")
