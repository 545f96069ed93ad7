"""The HTTP/1.1 wire, hardened: a bounded request head, and no framing but plain ``chunked``.

uvicorn's httptools protocol puts no limit on a request's head. llhttp hands a header over in pieces and
httptools joins them in Python until the header ends: a 64 MiB header held the event loop for 3.5 s and
256 MiB made the server unresponsive for 80 s, before any key was checked. Here the head's bytes are counted
as they arrive and the request is refused with 431 as soon as it passes the limit, before more is buffered;
so is a head with too many headers. Both limits are settings (``MAAS_MAX_HEADER_BYTES``, ``MAAS_MAX_HEADERS``).
A head must also arrive within ``MAAS_HEADER_TIMEOUT_SECONDS`` of its first byte (408 otherwise): uvicorn's
keep-alive timer stops at the first byte, so a client sending one byte a second held a connection forever.

``Transfer-Encoding`` other than exactly ``chunked`` (``gzip, chunked``, or ``gzip`` and ``chunked`` in two
headers; llhttp itself refuses ``chunked`` twice) is refused with 501 before the body is read: llhttp took such
a body as plain chunked data, never decompressed, and a proxy in front that reads the framing differently is
how requests get smuggled.

A refused request is answered in the route's error shape with ``Connection: close``; the connection is then
half-closed and what the client still sends is dropped for a moment, so that it reads the answer rather than
a reset.
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from maas.api.problems import error_body

log = logging.getLogger("maas.api")

# After a refusal the rest of the request is read and dropped this long before the connection closes: closed
# with unread data, the socket would reset, and a client still sending would see that instead of the answer.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class HeadLimits:
    """The most a request head may have: bytes (request line and headers), and headers."""

    max_bytes: int
    max_headers: int
    timeout_s: float = 10.0


class _Refused(Exception):
    """Raised in a parser callback to stop llhttp at once; ``data_received`` sends the answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def hardened_protocol(limits: HeadLimits) -> type[HardenedHttpToolsProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``: uvicorn builds it with its own arguments only."""

    class Configured(HardenedHttpToolsProtocol):
        pass

    Configured.limits = limits
    return Configured


class HardenedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HeadLimits] = HeadLimits(max_bytes=64 * 1024, max_headers=100)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes arriving belong to a request head until its headers are complete, and again once the message
        # is complete (keep-alive): the next request's head.
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self._refused and not self.transport.is_closing():
            self._refuse(_Refused(408, f"the request head did not arrive within {self.limits.timeout_s:g} s"))

    def data_received(self, data: bytes) -> None:
        # uvicorn's own version, fed in slices so that no more than the limit of a head is ever parsed.
        if self._refused:
            return  # lingering: what follows a refused request is dropped unread
        self._unset_keepalive_if_required()
        while data:
            if self._in_head:
                room = self.limits.max_bytes - self._head_bytes
                if room <= 0:
                    self._refuse(_Refused(431, f"the request head is over the limit of {self.limits.max_bytes} bytes"))
                    return
                # A slice may finish the head and carry body bytes: the loop feeds the rest uncounted.
                piece, data = data[:room], data[room:]
                if self._head_bytes == 0:
                    self._head_timer = self.loop.call_later(self.limits.timeout_s, self._head_too_slow)
                self._head_bytes += len(piece)
            else:
                piece, data = data, b""
            if not self._feed(piece):
                return

    def _feed(self, piece: bytes) -> bool:
        """Parse ``piece``; False when the connection is answered and done with (or upgraded)."""
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserCallbackError as exc:
            # httptools keeps the callback's exception as the context of its own.
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__)
            else:
                self._invalid()
            return False
        except httptools.HttpParserError:
            self._invalid()
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _refuse(self, refusal: _Refused) -> None:
        """Answer in the route's error shape and close: what is left of the request is dropped unread."""
        client = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        log.info("%srefused a request: %s", client, refusal.detail)
        title = http.HTTPStatus(refusal.status).phrase
        path = getattr(self, "url", b"").decode("latin-1")  # set when the request line started
        body, content_type = error_body(refusal.status, title, refusal.detail, path=path)
        head = [f"HTTP/1.1 {refusal.status} {title}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: " + content_type + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join([*head, body]))
        self._refused = True
        if not self.transport.can_write_eof():  # TLS: no half-close
            self.transport.close()
            return
        # Half-closed: the client reads the answer and the end of it; what it still sends is dropped until it
        # closes its side (asyncio then closes the transport) or the linger time is over.
        self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise _Refused(431, f"the request has more than {self.limits.max_headers} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        codings = [value for name, value in self.headers if name == b"transfer-encoding"]
        if codings and [coding.strip().lower() for coding in codings] != [b"chunked"]:
            raise _Refused(
                501, "only 'Transfer-Encoding: chunked' is supported: send the body as is, or chunked and nothing else"
            )
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()
