"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the predict path)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maas.api.metrics import ApiMetrics
from maas.api.openai.errors import is_openai_path


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a request body may have, and the setting an operator changes to allow more."""

    limit: int
    setting: str
    # Multipart framing around a file of exactly ``limit`` bytes: tolerated, never named in the answer.
    framing_allowance: int = 0


class RequestBodyLimits:
    """Refuse request bodies over their route's limit with 413, before they are buffered or parsed.

    Uploads (``upload_paths``, POST) get the upload limit; every other body (a predict call above all)
    the much smaller request limit, so one call cannot make the server parse 100 MB of JSON on its event
    loop. Content-Length is checked up front; chunked bodies are counted as they arrive and cut off at the
    limit with the same 413.
    """

    def __init__(self, app: ASGIApp, *, request: BodyLimit, upload: BodyLimit, upload_paths: frozenset[str]) -> None:
        self.app = app
        self.request = request
        self.upload = upload
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = scope["method"] == "POST" and scope["path"] in self.upload_paths
        rule = self.upload if is_upload else self.request
        hard_limit = rule.limit + rule.framing_allowance
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > hard_limit:
            await _send_413(send, rule, scope["path"])
            return
        received = 0
        response_started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > hard_limit:
                    refused = True
                    if not response_started:
                        await _send_413(send, rule, scope["path"])
                    # The app sees a client that went away: it stops reading, and its own answer is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


async def _send_413(send: Send, rule: BodyLimit, path: str) -> None:
    detail = f"the request body is over the limit of {rule.limit} bytes ({rule.setting})"
    if is_openai_path(path):
        # The openai SDK reads ``error.message``: a problem+json body would surface as an error without a message.
        error = {"message": detail, "type": "invalid_request_error", "param": None, "code": "request_too_large"}
        body, content_type = json.dumps({"error": error}).encode(), b"application/json"
    else:
        problem = {"type": "about:blank", "title": "Payload too large", "status": 413, "detail": detail}
        body, content_type = json.dumps(problem).encode(), b"application/problem+json"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestIdAndMetrics:
    """Echo or assign ``X-Request-ID`` and count requests by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = dict(scope["headers"]).get(b"x-request-id") or uuid.uuid4().hex.encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode("latin-1")
        status_holder: dict[str, Any] = {}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], template, str(status_holder.get("status", 500))).inc()
