"""The HTTP server under the app: uvicorn, with a header timeout and a clean exit.

uvicorn holds a connection whose request line and headers never finish for
as long as the client keeps it open (it times out only idle keep-alive
connections), so a few slow clients can hold every connection.
:func:`header_timeout_protocol` gives its httptools protocol a timer from the
first byte of each request (and from the connection's opening) to the end of
the headers; a request that misses it gets ``408`` and the connection closes.
The body has its own timeout in the app (``ebjr.serve.app``). The same
protocol caps the request line and headers at ``max_header_bytes``: past it
the client gets ``431`` and the connection closes, so a client cannot make
the server hold an unbounded header block.

:class:`Server` is uvicorn's server without its habit of re-raising the
signal after a graceful shutdown (which makes the process end "killed by
SIGTERM"); a drained server exits with status 0.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeaderLimitsProtocol", "Server", "header_timeout_protocol"]


class HeaderLimitsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a time limit (``timeout_s``) and a size limit
    (``max_header_bytes``) on each request's line and headers; the limits are class
    attributes, set by :func:`header_timeout_protocol`."""

    timeout_s = 10.0
    max_header_bytes = 64 * 1024
    _header_timer: Any = None
    _header_bytes = 0
    _refused = False

    def _within_limit(self, n: int) -> bool:
        """Count ``n`` more header bytes; past the limit answer 431 and close. Once
        refused, the parser runs on over what is left of this chunk storing nothing,
        and no request starts."""
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes and not self._refused:
            self._refused = True
            self._disarm()
            self._close_with(431, "Request Header Fields Too Large",
                             f"the request line and headers exceed {self.max_header_bytes} bytes")
        return not self._refused

    def on_url(self, url: bytes) -> None:
        if self._within_limit(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._within_limit(len(name) + len(value) + 4):
            super().on_header(name, value)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self._disarm()
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _close_with(self, status: int, reason: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\n".encode()
            + b"content-type: application/json\r\n"
            b"connection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        self._close_with(408, "Request Timeout",
                         f"the request's headers did not arrive within {self.timeout_s:g} s")

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a client that connects and says nothing

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def header_timeout_protocol(timeout_s: float,
                            max_header_bytes: int = 64 * 1024) -> type[HttpToolsProtocol]:
    """:class:`HeaderLimitsProtocol` with these limits (uvicorn's ``http=`` takes a class)."""
    return type("HeaderLimitsProtocol", (HeaderLimitsProtocol,),
                {"timeout_s": float(timeout_s), "max_header_bytes": int(max_header_bytes)})


class Server(uvicorn.Server):
    """uvicorn's server; SIGINT/SIGTERM drain it and the process exits normally."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
