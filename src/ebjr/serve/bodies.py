"""Request bodies: decompressed within the limit, and JSON parsed off the event loop, bounded.

A JSON body becomes Python objects before any check can look at it, and a
16 MiB body of ``[],[],...`` is several hundred MiB of them: parsed on the
event loop, one client repeating it stalls every other request, the
liveness probe included. So a JSON body (or the JSON header of a binary
one) is refused with 413 before parsing when it is over ``max_json_bytes``
or holds more than ``max_json_elements`` values (counted on the raw bytes,
an upper bound), and is parsed on a worker thread, at most
``max_concurrent_parses`` at a time (the others wait their turn without
holding the loop).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from ebjr.exceptions import InputError

__all__ = ["INLINE_BYTES", "BodyReader", "count_json_values", "describe"]

#: JSON bodies up to this size are parsed on the loop (well under a millisecond)
INLINE_BYTES = 64 * 1024


def count_json_values(raw: bytes) -> int:
    """An upper bound on the values and containers in the JSON text ``raw`` (every one
    after the first follows a ``,``, a ``[`` or a ``{``); counted in C, without parsing."""
    return raw.count(b",") + raw.count(b"[") + raw.count(b"{") + 1


def _is_branch(part: Any) -> bool:
    """A union branch's tag in an error location (``float``, ``list[...]``), not a field."""
    return isinstance(part, str) and (part in ("float", "int", "str") or part.startswith("list["))


def describe(errors: list[Any]) -> str:
    """Pydantic's errors of a request, at most five places, as one line.

    The branches of one union (tensor data: numbers in equally nested lists, or
    strings) are one error at the deepest place that is wrong:
    ``inputs.0.data.3: expected a number (or equally nested lists of numbers), got True``.
    """
    found: dict[str, str] = {}
    for e in errors:
        raw = [p for p in e.get("loc", ()) if p != "body"]
        if any(isinstance(p, str) and p.startswith("list[str") for p in raw):
            continue  # the strings branch (BYTES data): its complaint says nothing new
        union = any(_is_branch(p) for p in raw)
        loc = ".".join(str(p) for p in raw if not _is_branch(p)) or "body"
        if union:
            msg = f"expected a number (or equally nested lists of numbers), got {e.get('input')!r}"
        else:
            msg = e.get("msg", "invalid")
        found.setdefault(loc, msg[:120])
    deepest = [k for k in found if not any(o != k and o.startswith(k + ".") for o in found)]
    return "invalid request: " + "; ".join(f"{k}: {found[k]}" for k in deepest[:5])


def _validate(raw: bytes, model: type[BaseModel],
              fast: Callable[[bytes], Any] | None = None) -> Any:
    if fast is not None and (found := fast(raw)) is not None:
        return found
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InputError(describe(exc.errors(include_url=False))) from None


class BodyReader:
    """The body rules of one server (its settings' limits)."""

    def __init__(self, max_body_bytes: int, max_json_bytes: int, max_json_elements: int,
                 max_concurrent_parses: int) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_json_bytes = max_json_bytes
        self.max_json_elements = max_json_elements
        self.max_concurrent_parses = max_concurrent_parses
        self._parses: asyncio.Semaphore | None = None  # made on the server's loop

    async def read(self, request: Any) -> bytes:
        """A request's raw body, decompressed when its Content-Encoding says gzip or deflate."""
        return self.decompress(await request.body(), request.headers.get("content-encoding"))

    def decompress(self, raw: bytes, encoding: str | None) -> bytes:
        """``raw`` decoded as its ``Content-Encoding`` says (gzip, deflate or none), within
        the body limit."""
        encoding = (encoding or "identity").strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding not in ("gzip", "deflate"):
            raise InputError(
                f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none"
            )
        d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            out = d.decompress(raw, self.max_body_bytes + 1)
        except zlib.error as exc:
            raise InputError(f"the {encoding} body could not be decompressed: {exc}") from None
        if len(out) > self.max_body_bytes or d.unconsumed_tail:
            raise HTTPException(413, f"the decompressed body exceeds this server's limit of "
                                     f"{self.max_body_bytes} bytes")
        return out

    async def parse(self, raw: bytes, model: type[BaseModel],
                    fast: Callable[[bytes], Any] | None = None) -> Any:
        """``raw`` (JSON, whatever the Content-Type said) as ``model``; ``fast(raw)``, if
        given, is tried first (a quicker reader of a common form, None for any other).

        Raises:
            InputError: empty, not JSON, or not of the model's form (400, with the reasons).
            HTTPException: 413, over the JSON limits.
        """
        if not raw.strip():
            raise InputError("invalid request: the body is empty; expected a JSON object")
        if len(raw) > self.max_json_bytes:
            raise HTTPException(
                413, f"the JSON part of the body has {len(raw)} bytes; this server parses at "
                f"most {self.max_json_bytes} (send large tensors as binary data: the binary "
                "tensor extension of Triton's and KServe's clients)")
        n = count_json_values(raw)
        if n > self.max_json_elements:
            raise HTTPException(
                413, f"the JSON body holds up to {n} values; this server parses at most "
                f"{self.max_json_elements} (send large tensors as binary data)")
        if len(raw) <= INLINE_BYTES:  # a small body costs less than a thread hop
            return _validate(raw, model, fast)
        if self._parses is None:
            self._parses = asyncio.Semaphore(self.max_concurrent_parses)
        async with self._parses:
            return await asyncio.to_thread(_validate, raw, model, fast)
