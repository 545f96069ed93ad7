"""The one place where errors become HTTP: RFC 9457 problem+json (DESIGN decision 11)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from maas.api.openai import errors as openai_errors
from maas.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MaasError,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
)

STATUS_OF: list[tuple[type[MaasError], int]] = [
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (QuotaExceeded, 429),
    (Unavailable, 503),
]


MAX_LISTED_ERRORS = 100


class Problem(BaseModel):
    """RFC 9457 problem details: every error of the native API has this shape."""

    type: str = "about:blank"
    title: str = Field(examples=["Invalid input"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["instance 0, column 'age': expected a number, got str"])
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Field errors, each with its `loc` (where) and `msg` (what to fix)"
    )
    errors_total: int | None = Field(default=None, description="Set when `errors` lists only the first ones")


_PROBLEM_SCHEMA = Problem.model_json_schema()


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}}}


# Documented on every router, so the OpenAPI schema shows the shape clients really get.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _problem_response("No key, or an unknown or revoked one"),
    403: _problem_response("The key's role does not allow this"),
    404: _problem_response("No such resource in your tenant"),
    422: _problem_response("Invalid input; `detail` and `errors` say what to fix"),
}


def status_for(error: MaasError) -> int:
    return next((status for kind, status in STATUS_OF if isinstance(error, kind)), 500)


def problem(
    status: int, title: str, detail: str, *, errors: list[dict[str, Any]] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    if errors:
        # A 1,000-row batch with every column wrong would list 30,000 errors: the first ones say what to fix.
        body["errors"] = errors[:MAX_LISTED_ERRORS]
        if len(errors) > MAX_LISTED_ERRORS:
            body["errors_total"] = len(errors)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def error_body(
    status: int, title: str, detail: str, *, path: str, code: str | None = None, **extra: Any
) -> tuple[bytes, bytes]:
    """An error answered outside the handlers below (middleware, the HTTP protocol): its body and content type,
    in the shape of the route asked for (OpenAI's on /v1, with ``code``; problem+json elsewhere)."""
    if openai_errors.is_openai_path(path):
        return json.dumps(openai_errors.envelope(status, detail, code=code)).encode(), b"application/json"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return json.dumps(body).encode(), b"application/problem+json"


def internal_error_body(path: str, request_id: str) -> tuple[bytes, bytes]:
    """The answer to an unexpected exception: a generic text and the request id its log line carries."""
    detail = f"an unexpected error occurred; request id {request_id}"
    return error_body(500, "Internal error", detail, path=path, request_id=request_id)


def _redacted(errors: list[dict[str, Any]], redact: Callable[[str], str]) -> list[dict[str, Any]]:
    return [{key: redact(value) if isinstance(value, str) else value for key, value in e.items()} for e in errors]


def _field_error(err: Any, redact: Callable[[str], str]) -> dict[str, Any]:
    error = {"loc": list(err["loc"]), "msg": redact(str(err["msg"])), "type": err["type"]}
    if err["type"] == "json_invalid" and (reason := (err.get("ctx") or {}).get("error")):
        error["ctx"] = {"error": redact(str(reason))}  # what the JSON parser said (``Expecting value``)
    return error


def install_error_handlers(app: FastAPI, redact: Callable[[str], str]) -> None:
    """Map errors to answers; every text taken from an exception goes through ``redact`` first (server paths
    and keys out: :mod:`maas.api.redaction`)."""

    @app.exception_handler(MaasError)
    async def _domain(request: Request, exc: MaasError) -> JSONResponse:
        status = status_for(exc)
        detail = redact(exc.detail)
        if openai_errors.is_openai_path(request.url.path):
            return openai_errors.from_domain_error(exc, status, detail=detail)
        if status == 401:
            # Auth failures get one generic text: no hint whether a key exists or was revoked.
            return problem(401, exc.title, "a valid API key is required: send 'Authorization: Bearer <key>'")
        return problem(status, exc.title, detail, errors=_redacted(exc.errors, redact))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_error(err, redact) for err in exc.errors()]
        if openai_errors.is_openai_path(request.url.path):
            return openai_errors.from_validation_errors(errors)
        if errors and errors[0]["type"] == "json_invalid":
            reason = errors[0].get("ctx", {}).get("error")
            detail = "the request body is not valid JSON" + (f": {reason}" if reason else "")
            return problem(422, "Invalid input", detail, errors=errors)
        named = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        return problem(422, "Invalid input", f"the request is invalid: {named}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = redact(str(exc.detail))
        if openai_errors.is_openai_path(request.url.path):
            return openai_errors.openai_error(exc.status_code, detail)
        return problem(exc.status_code, "Error", detail)

    @app.exception_handler(Exception)
    async def _last_resort(request: Request, exc: Exception) -> Response:
        # Unexpected exceptions are answered and logged by the UnexpectedErrors middleware; one reaches here
        # only when raised outside it or after its answer began. Starlette re-raises it after this answer,
        # and uvicorn logs it (once) then; logging it here too would make two reports of one failure.
        request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
        body, content_type = internal_error_body(request.url.path, request_id)
        return Response(body, status_code=500, media_type=content_type.decode())
