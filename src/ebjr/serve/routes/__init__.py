"""The HTTP routes of ``ebjr serve``, one module per concern.

- :mod:`~ebjr.serve.routes.protocol`: the Open Inference Protocol v2 (health,
  metadata, Triton's configuration, statistics and repository extensions,
  ``infer``) and the ``predict`` convenience route;
- :mod:`~ebjr.serve.routes.knob`: the live threshold, the curve and the routing stats;
- :mod:`~ebjr.serve.routes.operations`: Prometheus metrics and the demo page.

Each module holds an :class:`fastapi.APIRouter`; :func:`ebjr.serve.app.create_app`
includes them. Routes reach the app's state through the dependencies of
:mod:`ebjr.serve.state`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ebjr.serve.protocol import ErrorResponse

__all__ = ["ERRORS", "json_body", "model_route"]

#: the error statuses a route may answer, for the OpenAPI document
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 408, 413, 429, 502, 503)
}


def model_route(router: APIRouter, method: str, suffix: str, endpoint: Any, **route: Any) -> None:
    """Route ``/v2/models/{name}<suffix>`` and its ``/versions/{version}`` twin to
    ``endpoint`` (the version is checked by :func:`ebjr.serve.state.serving`)."""
    for path in (f"/v2/models/{{name}}{suffix}",
                 f"/v2/models/{{name}}/versions/{{version}}{suffix}"):
        router.add_api_route(path, endpoint, methods=[method], **route)


def json_body(model: Any, required: bool = True) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses its body itself (any Content-Type)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": ref}}}}
