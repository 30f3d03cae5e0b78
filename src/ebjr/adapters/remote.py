"""A model behind an Open Inference Protocol v2 server (KServe, Triton, ``ebjr serve``).

One client speaks to it: :class:`V2Client`, pooled and asynchronous, with the
one retry policy (:mod:`ebjr._utils.retry`). The server's remote teacher
(``ebjr.serve.remote``) awaits it on the server's event loop;
:class:`RemoteV2Adapter` is its blocking face for offline use, running the same
client on an event loop of its own. The request is one FP32 tensor of the
batch; the response's output (by name, or the first one) must be ``(n, C)``
logits.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ebjr._utils.arrays import to_numpy
from ebjr.adapters.base import Adapter, ModelFiles
from ebjr.exceptions import InputError, TeacherUnavailable, missing_dependency

__all__ = ["RemoteV2Adapter", "V2Client", "v2_logits", "v2_request"]


def v2_request(rows: Any, input_name: str = "input") -> dict[str, Any]:
    """The JSON body of an infer request carrying ``rows`` as one FP32 tensor."""
    x = np.ascontiguousarray(to_numpy(rows), dtype=np.float32)
    return {
        "inputs": [
            {
                "name": input_name,
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.reshape(-1).tolist(),
            }
        ]
    }


def v2_logits(payload: Any, n: int, output_name: str | None = None) -> np.ndarray:
    """The ``(n, C)`` logits in an infer response; :class:`InputError` if it has none."""
    outputs = payload.get("outputs") if isinstance(payload, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise InputError(f"the v2 response has no outputs: {str(payload)[:200]}")
    if output_name is None:
        out = outputs[0]
    else:
        named = [o for o in outputs if isinstance(o, dict) and o.get("name") == output_name]
        if not named:
            names = [o.get("name") for o in outputs if isinstance(o, dict)]
            raise InputError(f"the v2 response has no output {output_name!r} (it has {names})")
        out = named[0]
    try:
        shape = [int(d) for d in out["shape"]]
        arr = np.asarray(out["data"], dtype=np.float64).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the v2 response's output is not a numeric tensor: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != n:
        raise InputError(f"expected ({n}, C) logits from the remote model, got shape {arr.shape}")
    return arr


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InputError(f"expected an http(s) URL of a v2 model, got {url!r}")
    return url.rstrip("/")


class V2Client:
    """The one client of a v2 model: ``await client.infer(rows)`` -> ``(n, C)`` logits.

    A pooled ``httpx.AsyncClient``; each call is tried ``1 + retries`` times
    (connection errors, timeouts, 5xx and 429 answers are retried after the
    policy's back-off; ``on_retry`` sees each retried failure).

    Raises (from :meth:`infer`):
        TeacherUnavailable: every attempt failed; ``kind`` is the last
            failure's (``timeout``, ``connection``, ``http_5xx``).
        InputError: the model refused the batch (another 4xx), or its answer
            is not the logits asked for; not retried.
    """

    def __init__(
        self,
        url: str,
        *,
        input_name: str = "input",
        output_name: str | None = None,
        timeout: float = 10.0,
        retries: int = 1,
        max_connections: int = 8,
        on_retry: Callable[[Any], None] | None = None,
    ) -> None:
        try:
            import httpx

            from ebjr._utils import retry
        except ImportError as exc:  # pragma: no cover - httpx, tenacity: the serve extra
            raise missing_dependency(exc.name or "httpx", "serve", "a remote v2 model") from exc
        self.url = _check_url(url)
        self.input_name = input_name
        self.output_name = output_name
        self.retries = retries
        self.on_retry = on_retry
        self._retry = retry
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
        )

    async def infer(self, rows: Any) -> np.ndarray:
        import httpx

        Retryable = self._retry.Retryable
        body = v2_request(rows, self.input_name)
        n = body["inputs"][0]["shape"][0]
        try:
            async for attempt in self._retry.async_attempts(self.retries, self.on_retry):
                with attempt:
                    try:
                        r = await self._client.post(f"{self.url}/infer", json=body)
                    except httpx.TimeoutException as exc:
                        raise Retryable("timeout", str(exc) or "timed out") from exc
                    except httpx.TransportError as exc:
                        raise Retryable("connection", str(exc) or type(exc).__name__) from exc
                    if r.status_code >= 500 or r.status_code == 429:
                        raise Retryable("http_5xx", f"HTTP {r.status_code}: {r.text[:200]}")
                    if r.status_code != 200:
                        raise InputError(
                            f"the remote model at {self.url} refused the batch "
                            f"({r.status_code}): {r.text[:300]}"
                        )
                    return v2_logits(r.json(), n, self.output_name)
        except Retryable as exc:
            raise TeacherUnavailable(
                f"the remote model at {self.url} did not answer: {exc}", exc.kind
            ) from exc
        raise TeacherUnavailable(f"the remote model at {self.url} was not called", "connection")

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _shut_down(client: V2Client, loop: asyncio.AbstractEventLoop) -> None:
    async def shut() -> None:
        await client.aclose()
        loop.stop()

    if loop.is_running():
        asyncio.run_coroutine_threadsafe(shut(), loop)


def _run_until_stopped(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


class RemoteV2Adapter(Adapter):
    """A remote model over the Open Inference Protocol v2 REST API, called blocking.

    Runs a :class:`V2Client` on an event loop of its own (a daemon thread,
    started on the first call; :meth:`close` stops it), so offline code and
    the server share one client and one retry policy. Thread-safe.

    Args:
        url: the model's URL, e.g. ``http://host:8001/v2/models/teacher``
            (``/infer`` is appended).
        input_name, output_name: tensor names (``None``: the first output).
        timeout: seconds per attempt; ``retries``: further attempts on
            connection errors, timeouts and 5xx answers.

    A call whose attempts all failed raises ``ConnectionError``; a refused
    batch or a bad answer, :class:`InputError`.
    """

    kind = "remote_v2"

    def __init__(
        self,
        url: str,
        *,
        input_name: str = "input",
        output_name: str | None = None,
        timeout: float = 10.0,
        retries: int = 1,
    ) -> None:
        self.url = _check_url(url)
        self.input_name = input_name
        self.output_name = output_name
        self.timeout = timeout
        self.retries = retries
        self._lock = threading.Lock()
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._client: V2Client | None = None

    def _loop(self) -> tuple[asyncio.AbstractEventLoop, V2Client]:
        with self._lock:
            if self._client is None or self._event_loop is None:
                loop = asyncio.new_event_loop()
                # a daemon thread: a forgotten adapter never holds the interpreter at exit
                threading.Thread(target=_run_until_stopped, args=(loop,), daemon=True,
                                 name=f"ebjr-remote-{self.url}").start()
                self._event_loop = loop
                self._client = asyncio.run_coroutine_threadsafe(
                    self._make_client(), loop).result()
                # an adapter dropped without close() closes its pool and stops its loop
                self._finalizer = weakref.finalize(self, _shut_down, self._client, loop)
            return self._event_loop, self._client

    async def _make_client(self) -> V2Client:  # on the adapter's loop, which the client uses
        return V2Client(self.url, input_name=self.input_name, output_name=self.output_name,
                        timeout=self.timeout, retries=self.retries)

    def forward(self, batch: Any) -> np.ndarray:
        loop, client = self._loop()
        try:
            return asyncio.run_coroutine_threadsafe(client.infer(batch), loop).result()
        except TeacherUnavailable as exc:  # the adapter's contract: a ConnectionError
            raise ConnectionError(str(exc)) from exc

    def close(self) -> None:
        """Close the connection pool and stop the adapter's event loop."""
        with self._lock:
            client, loop = self._client, self._event_loop
            self._client = self._event_loop = None
        if client is not None and loop is not None:
            self._finalizer.detach()
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result()
            loop.call_soon_threadsafe(loop.stop)

    def reference(self) -> dict[str, Any]:
        return {
            "kind": "remote_v2",
            "url": self.url,
            "input_name": self.input_name,
            "output_name": self.output_name,
        }

    @classmethod
    def from_reference(cls, ref: dict[str, Any], files: ModelFiles) -> RemoteV2Adapter:
        return cls(
            ref["url"], input_name=ref.get("input_name", "input"),
            output_name=ref.get("output_name"),
        )

    def __repr__(self) -> str:
        return f"RemoteV2Adapter({self.url!r})"
