"""What operators and people look at: ``GET /metrics`` (Prometheus) and ``GET /`` (the demo
page, with a nonce-based Content-Security-Policy)."""

from __future__ import annotations

import json
import secrets
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from ebjr.serve.state import State

__all__ = ["router"]

router = APIRouter()


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    if state.engine is not None:
        for stage, rows in (await state.engine.queue_rows()).items():
            state.metrics.queue_rows.labels(stage).set(rows)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


@cache
def _page_template() -> str:
    return resources.files("ebjr.serve").joinpath("static/index.html").read_text("utf-8")


def _script_json(value: Any) -> str:
    """``value`` as JSON safe inside an HTML ``<script>`` (no ``<``, ``>`` or ``&``)."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def demo(state: State) -> HTMLResponse:
    # the name is checked (settings.MODEL_NAME), and embedded as JSON that cannot end a script
    page = _page_template().replace("__MODEL_NAME__", _script_json(state.settings.name))
    nonce = secrets.token_urlsafe(16)
    return HTMLResponse(page.replace("<script>", f'<script nonce="{nonce}">'), headers={
        "Content-Security-Policy": (
            f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' "
            "'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"),
    })
