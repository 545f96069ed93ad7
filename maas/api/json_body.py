"""JSON request bodies: a large one is parsed off the event loop, and one FastAPI cannot parse is a clear 422.

FastAPI parses a JSON body with ``json.loads`` on the event loop, before the route's dependencies run (so
before the key is checked): a 10 MB body held every other request for up to a second. A worker thread alone
does not help: the C parser holds the GIL from the first byte to the last (measured: a 12 MB body parsed in a
thread still stopped the loop for 0.9 s). Parsed in a thread *with Python hooks* for numbers and objects, it
reaches a Python call every few values, where the interpreter hands the GIL to the loop when it waits (at
most every 5 ms): the loop stays responsive, and the large body itself costs about 1.5 times as long.
Strings have no hook: a body of millions of short strings still holds the GIL while it is parsed (about
0.15 s for 10 MB).

A body over :data:`OFF_LOOP_BYTES` is parsed only for a caller whose key is valid (checked first, from the key
cache): an anonymous client cannot make the server parse megabytes. Every route with a JSON body needs a key.

Bodies up to :data:`OFF_LOOP_BYTES` are parsed on the loop as before: a thread hop would cost them more than
the parse. JSON nested deeper than the parser's recursion limit (``[[[[…``) is a 422 that says so, and so is
a body that is not JSON, not UTF-8, or holds a number too long to convert.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response, params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from maas.api.auth import authenticate

# About a millisecond of parsing: more than the cost of handing the body to a thread.
OFF_LOOP_BYTES = 64 * 1024


# The hooks are Python functions on purpose: a builtin (``int``) runs no bytecode, so the parser would never
# reach a point where the interpreter may switch threads.
def _int(text: str) -> int:
    return int(text)


def _float(text: str) -> float:
    return float(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return dict(pairs)  # later duplicate keys win, as with the parser's own dicts


def parse_yielding(body: bytes) -> Any:
    """``json.loads(body)``, the same result, with points where another thread may take the GIL."""
    return json.loads(body, parse_int=_int, parse_float=_float, object_pairs_hook=_object)


def _invalid(reason: str, loc: tuple[str | int, ...] = ("body",)) -> RequestValidationError:
    # FastAPI's own shape for a body that does not parse: the handlers answer it like any invalid body.
    error = {"type": "json_invalid", "loc": loc, "msg": "JSON decode error", "input": {}, "ctx": {"error": reason}}
    return RequestValidationError([error])


async def parse_body(body: bytes) -> Any:
    """The JSON value of a request body; :class:`RequestValidationError` when there is none."""
    try:
        if len(body) <= OFF_LOOP_BYTES:
            return json.loads(body)
        return await run_in_threadpool(parse_yielding, body)
    except json.JSONDecodeError as exc:
        raise _invalid(exc.msg, ("body", exc.pos)) from None
    except UnicodeDecodeError:
        raise _invalid("the body is not UTF-8 text") from None
    except ValueError:  # int() refuses more than 4,300 digits
        raise _invalid("a number in it has too many digits") from None
    except RecursionError:
        raise _invalid("it is nested too deeply (about 1,000 levels of arrays and objects at most)") from None


def declares_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this content type as JSON (``application/json``, ``…+json``)."""
    if not content_type:
        return False  # FastAPI's strict content type: no header, no JSON parsing
    if content_type == "application/json":
        return True  # what nearly every call sends: the predict path skips the header parser
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class JsonBodyRoute(APIRoute):
    """An APIRoute whose JSON body is parsed by :func:`parse_body` before FastAPI's handler runs.

    Starlette's ``Request.json()`` returns ``request._json`` once set, so FastAPI's handler uses the value
    parsed here and parses nothing itself."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        if self.body_field is None or isinstance(self.body_field.field_info, params.Form):
            return handle  # no JSON body to read (none, or a form): FastAPI parses none, nor does this route

        async def handle_parsed(request: Request) -> Response:
            if declares_json(request.headers.get("content-type")):
                body = await request.body()
                if len(body) > OFF_LOOP_BYTES:
                    await _require_valid_key(request)
                if body:
                    request._json = await parse_body(body)
            return await handle(request)

        return handle_parsed


async def _require_valid_key(request: Request) -> None:
    """Raise Unauthorized unless the request carries a valid key (the route's own dependency checks it again,
    from the cache, and applies the role)."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    credentials = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=secret) if scheme.lower() == "bearer" else None
    )
    await authenticate(request, credentials)


def parse_json_bodies(router: APIRouter) -> APIRouter:
    """Make ``router``'s routes read JSON bodies through :class:`JsonBodyRoute`; returns the router.

    A route's class is FastAPI's hook for how it reads its request, and the routers are declared in their
    modules with the default class. Their routes are switched here, before the app includes them (FastAPI
    builds an included route's handler on first use); JsonBodyRoute adds no state, so the switch is safe.
    """
    for route in router.routes:
        if type(route) is APIRoute:
            route.__class__ = JsonBodyRoute
    return router
