"""The server's edge: pure ASGI middleware that every request crosses before a route.

- :class:`RequestEdge` (outermost): a request id for every request (the
  client's ``X-Request-ID`` if it is a plain token, else a new one), sent back
  in ``X-Request-ID`` and in every error body; security headers
  (``nosniff``, no framing); the inference requests' counts; a client that
  goes away before its answer is logged at INFO and counted, never an error;
  anything unexpected is a 500 whose details stay in the log, with the id.
- :class:`BrowserGuard`: a browser request whose ``Origin`` names another
  site gets 403 unless a setting allows that origin (a CORS-simple
  ``text/plain`` POST from any page would otherwise run inference); clients
  that send no ``Origin`` (curl, SDKs) are not affected. On a connection that
  arrived on a loopback address, a ``Host`` that is not a loopback name (or an
  allowed one) gets 400: DNS rebinding.
- :class:`BodyGuard`: the whole body first, within a size and a time limit.

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``): no extra task per
request, and a disconnect is an ordinary event.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse

from ebjr.exceptions import Overloaded
from ebjr.serve.errors import answer_for

__all__ = ["BodyGuard", "BrowserGuard", "RequestEdge", "request_id_of"]

log = logging.getLogger("ebjr.serve")

_TOKEN = re.compile(r"[A-Za-z0-9._\-]{1,64}")
#: sent with every response (the demo page adds its own Content-Security-Policy)
SECURITY_HEADERS = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
)
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def request_id_of(scope: Mapping[str, Any]) -> str | None:
    """The id :class:`RequestEdge` gave this request."""
    return (scope.get("state") or {}).get("request_id")


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")
    return None


async def _refuse(status: int, message: str, scope: dict, receive: Any, send: Any,
                  headers: dict[str, str] | None = None) -> None:
    body: dict[str, Any] = {"error": message}
    rid = request_id_of(scope)
    if rid:
        body["request_id"] = rid
    await JSONResponse(body, status, headers=headers)(scope, receive, send)


class RequestEdge:
    """Request id, security headers, counts, disconnects and the last-resort 500.

    Args:
        on_request: called with each request's path; ``True`` for an inference request
            (counted as accepted, and by status once answered).
        check_room: called before a counted request's body is read; raises
            :class:`Overloaded` when the queue is full (429 at once).
        on_answer: ``(counted, status | None)`` after every request; ``None``: the
            client went away first.
    """

    def __init__(self, app: Any, on_request: Callable[[str], bool],
                 check_room: Callable[[], None],
                 on_answer: Callable[[bool, int | None], None]) -> None:
        self.app = app
        self.on_request = on_request
        self.check_room = check_room
        self.on_answer = on_answer

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        rid = given if given and _TOKEN.fullmatch(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        status: int | None = None

        async def send_with_headers(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = rid
                for k, v in SECURITY_HEADERS:
                    headers.setdefault(k, v)
            await send(message)

        counted = self.on_request(scope["path"])
        try:
            if counted:
                self.check_room()  # a full queue refuses before the body is read
            await self.app(scope, receive, send_with_headers)
        except Overloaded as exc:
            if status is None:
                answer = answer_for(exc)
                await _refuse(answer.status, answer.message, scope, receive, send_with_headers,
                              answer.headers)
        except Exception:
            log.exception("unexpected error on %s (request %s)", scope["path"], rid)
            if status is None:
                await _refuse(500, "internal error; the server log has the details", scope,
                              receive, send_with_headers)
        finally:
            if status is None:
                log.info("client went away before its answer: %s %s (request %s)",
                         scope.get("method"), scope["path"], rid)
            self.on_answer(counted, status)


class BrowserGuard:
    """403 for a cross-site browser request; 400 for a foreign ``Host`` on loopback.

    Args:
        allowed_origins: origins (``scheme://host[:port]``) allowed besides the server's
            own; ``"*"`` allows every origin.
        allowed_hosts: ``Host`` names allowed besides the loopback names on a loopback
            connection; when given, the only ones allowed on any connection.
    """

    def __init__(self, app: Any, allowed_origins: list[str], allowed_hosts: list[str]) -> None:
        self.app = app
        self.any_origin = "*" in allowed_origins
        self.origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.hosts = {h.lower() for h in allowed_hosts}

    def _host_ok(self, scope: dict, host: str) -> bool:
        name = _host_name(host)
        if self.hosts:
            return name in self.hosts or (name in _LOOPBACK_NAMES and _on_loopback(scope))
        return not _on_loopback(scope) or name in _LOOPBACK_NAMES

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host") or ""
        if not self._host_ok(scope, host):
            await _refuse(400, f"the Host header {host[:100]!r} does not name this server; it "
                          "serves localhost (start it with --allowed-hosts NAME to accept "
                          "another name)", scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is not None and not self.any_origin:
            same = origin.lower() == f"{scope.get('scheme', 'http')}://{host}".lower()
            if not same and origin.rstrip("/").lower() not in self.origins:
                await _refuse(403, f"a page of another site ({origin[:100]!r}) may not call this "
                              "server; start it with --allowed-origins ORIGIN to allow one",
                              scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_name(host: str) -> str:
    """The name of a ``Host`` header, without its port (``[::1]:8000`` -> ``[::1]``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0]


def _on_loopback(scope: dict) -> bool:
    """The connection arrived on a loopback address of this machine."""
    server = scope.get("server")
    if not server:
        return False
    try:
        return ipaddress.ip_address(str(server[0]).strip("[]")).is_loopback
    except ValueError:
        return str(server[0]) == "localhost"


class BodyGuard:
    """Read the whole body first, within a size limit and a time limit.

    A body over ``limit`` bytes (declared or streamed) gets 413, and so does a
    plain JSON body (no binary tensor header, no Content-Encoding) over
    ``json_limit`` bytes, before it is read; one that
    does not finish within ``timeout_s`` gets 408; one still arriving when the
    server starts to shut down gets 503. Each closes the connection, so a
    slow or stalled client never holds a worker or delays a shutdown.
    """

    def __init__(self, app: Any, limit: int, timeout_s: float,
                 stopping: Callable[[], bool], json_limit: int | None = None) -> None:
        self.app = app
        self.limit = limit
        self.json_limit = json_limit or limit
        self.timeout_s = timeout_s
        self.stopping = stopping  # the server is shutting down

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        close = {"Connection": "close"}
        limit = self.limit
        if (_header(scope, b"inference-header-content-length") is None
                and _header(scope, b"content-encoding") is None):
            limit = min(limit, self.json_limit)  # all of it is JSON, to be parsed
        message = (f"the request body exceeds this server's limit of {limit} bytes"
                   + (" for JSON (send large tensors as binary data)" if limit < self.limit
                      else ""))
        declared = (_header(scope, b"content-length") or "").strip()
        if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            await _refuse(413, message, scope, receive, send, close)
            return
        # read the body up to the limit before the app sees it (a streamed body has no length)
        chunks, seen = [], 0
        deadline = time.monotonic() + self.timeout_s
        while True:
            pending = asyncio.ensure_future(receive())
            while True:
                left = deadline - time.monotonic()
                await asyncio.wait({pending}, timeout=min(max(left, 0.0), 0.25))
                if pending.done():
                    break
                if time.monotonic() >= deadline:
                    pending.cancel()
                    await _refuse(408, f"the request body did not arrive within "
                                  f"{self.timeout_s:g} s", scope, receive, send, close)
                    return
                if self.stopping():
                    pending.cancel()
                    await _refuse(503, "the server is shutting down; the request body was not "
                                  "complete", scope, receive, send, close)
                    return
            msg = pending.result()
            if msg["type"] != "http.request":  # the client went away
                return
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await _refuse(413, message, scope, receive, send, close)
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
