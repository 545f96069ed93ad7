"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the predict path)."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maas.api.metrics import ApiMetrics
from maas.api.problems import error_body, internal_error_body

log = logging.getLogger("maas.api")

# A caller's X-Request-ID is echoed (and logged) only if it looks like an id: short, and nothing that could
# split a log line or a header. Anything else gets a fresh id, as if none had been sent.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


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
    # On /v1 in OpenAI's shape: the openai SDK reads ``error.message``.
    await _send_error(send, 413, *error_body(413, "Payload too large", detail, path=path, code="request_too_large"))


async def _send_error(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class UnexpectedErrors:
    """Answer an unexpected exception with a 500 in the route's error shape; log it once; keep the connection.

    Starlette's ServerErrorMiddleware (outermost) answers too, but then re-raises: uvicorn logged the same
    traceback a second time and closed the client's keep-alive connection. Caught here, inside it, a failure
    that has not started its answer goes no further. One that has (a stream cut halfway) is re-raised: only a
    closed connection tells the client the body is incomplete, and uvicorn's is then its one log line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            # The id RequestIdAndMetrics echoes in X-Request-ID, so a user's report finds this log line.
            request_id = scope.get("state", {}).get("request_id") or uuid.uuid4().hex
            log.exception("unhandled error (request %s)", request_id)
            await _send_error(send, 500, *internal_error_body(scope["path"], request_id))


class RequestIdAndMetrics:
    """Echo or assign ``X-Request-ID`` and count requests by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-request-id", b"")
        request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex.encode()
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
