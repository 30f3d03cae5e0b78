"""The HTTP server under the app: uvicorn, with a header timeout and a clean exit.

uvicorn holds a connection whose request line and headers never finish for
as long as the client keeps it open (it times out only idle keep-alive
connections), so a few slow clients can hold every connection.
:func:`header_timeout_protocol` gives its httptools protocol a timer from the
first byte of each request (and from the connection's opening) to the end of
the headers; a request that misses it gets ``408`` and the connection closes.
The body has its own timeout in the app (``ebjr.serve.app``).

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

__all__ = ["Server", "header_timeout_protocol"]


def header_timeout_protocol(timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a ``timeout_s`` limit on each request's headers."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            body = json.dumps(
                {"error": f"the request's headers did not arrive within {timeout_s:g} s"}
            ).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\n"
                b"content-type: application/json\r\n"
                b"connection: close\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a client that connects and says nothing

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


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
