"""Errors on ``/v1`` in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

The official SDKs read ``error.message`` and map the status to an exception class (400 BadRequestError,
401 AuthenticationError, 404 NotFoundError, 422 UnprocessableEntityError, 429 RateLimitError), so the status
and the message matter most; ``param`` names the request field to fix, ``code`` a stable machine reason.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from maas.errors import InvalidInput, MaasError, NotFound, PayloadTooLarge

PREFIX = "/v1/"

_TYPE_OF_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class OpenAIError(MaasError):
    """An error with OpenAI's own ``code`` and ``param`` (e.g. ``context_length_exceeded``, ``messages``).

    Raise it from /v1 code where the SDK's users expect a specific code; other domain errors are mapped."""

    title = "Invalid request"

    def __init__(self, detail: str, *, status: int = 400, code: str | None = None, param: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.param = param


def is_openai_path(path: str) -> bool:
    # "/v1" itself too: an OpenAI client given a base URL without the trailing path reaches it.
    return path.startswith(PREFIX) or path == PREFIX.rstrip("/")


def envelope(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The body of an error in OpenAI's shape."""
    # A status not listed (405, 408, ...) is still the client's: only 5xx are server errors.
    kind = _TYPE_OF_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(envelope(status, message, param=param, code=code), status_code=status, headers=headers)


def _param(errors: list[dict[str, Any]] | None) -> str | None:
    """The request field an error names: the last non-index part of its ``loc`` after ``body``."""
    if not errors or errors[0].get("type") == "json_invalid":  # its loc is ("body", <character offset>)
        return None
    loc = [part for part in errors[0].get("loc", []) if part not in ("body", "query", "path")]
    return ".".join(str(part) for part in loc) or None


def from_domain_error(exc: MaasError, status: int, *, detail: str | None = None) -> JSONResponse:
    """Render a domain error; OpenAI answers invalid parameters with 400, so InvalidInput does too.

    ``detail`` replaces the error's own text (the caller's redacted copy of it)."""
    detail = exc.detail if detail is None else detail
    if isinstance(exc, OpenAIError):
        return openai_error(exc.status, detail, param=exc.param, code=exc.code)
    if isinstance(exc, InvalidInput) and not isinstance(exc, PayloadTooLarge):
        status = 400
    code = None
    if isinstance(exc, NotFound):
        code = "model_not_found" if exc.kind == "model" else f"{exc.kind.replace(' ', '_')}_not_found"
    if status == 401:
        return openai_error(
            401, "a valid API key is required: send 'Authorization: Bearer <key>'", code="invalid_api_key"
        )
    return openai_error(status, detail, param=_param(exc.errors), code=code)


def from_validation_errors(errors: list[dict[str, Any]]) -> JSONResponse:
    """Schema violations (a bound like ``n <= 8``, a wrong type) are 422, checked before any work is done."""
    if errors and errors[0].get("type") == "json_invalid":
        # The parser's reason (``Expecting value``, nested too deeply), where the error carries one.
        reason = (errors[0].get("ctx") or {}).get("error")
        message = "the request body is not valid JSON" + (f": {reason}" if reason else "")
        return openai_error(422, message, code="invalid_json")
    # A missing body has loc ("body",): named as such rather than as an empty field name.
    named = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in errors[:5])
    return openai_error(422, f"the request is invalid: {named}", param=_param(errors), code="invalid_request")
