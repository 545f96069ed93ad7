"""The one place where errors become HTTP: RFC 9457 problem+json (DESIGN decision 11)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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

log = logging.getLogger("maas.api")

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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MaasError)
    async def _domain(request: Request, exc: MaasError) -> JSONResponse:
        status = status_for(exc)
        if openai_errors.is_openai_path(request.url.path):
            return openai_errors.from_domain_error(exc, status)
        if status == 401:
            # Auth failures get one generic text: no hint whether a key exists or was revoked.
            return problem(401, exc.title, "a valid API key is required: send 'Authorization: Bearer <key>'")
        return problem(status, exc.title, exc.detail, errors=exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in exc.errors()]
        if openai_errors.is_openai_path(request.url.path):
            return openai_errors.from_validation_errors(errors)
        named = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        return problem(422, "Invalid input", f"the request is invalid: {named}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if openai_errors.is_openai_path(request.url.path):
            return openai_errors.openai_error(exc.status_code, str(exc.detail))
        return problem(exc.status_code, "Error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The id the middleware echoes in X-Request-ID, so a user's report finds this log line.
        request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
        log.exception("unhandled error (request %s)", request_id, exc_info=exc)
        if openai_errors.is_openai_path(request.url.path):
            return openai_errors.openai_error(500, f"an unexpected error occurred; request id {request_id}")
        return problem(
            500, "Internal error", f"an unexpected error occurred; request id {request_id}", request_id=request_id
        )
