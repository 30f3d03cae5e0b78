"""The FastAPI application: Open Inference Protocol v2 plus ebjr's live knob, stats and demo.

``create_app(settings)`` builds the app; models load in its lifespan, so the
server answers ``/v2/health/live`` at once and ``/v2/health/ready`` when the
models are in. Endpoints (``{name}`` is the served model's name):

- ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
  ``GET /v2/models/{name}[/versions/1]``, ``.../ready``, ``.../config``
  (Triton's model configuration), ``.../stats`` (Triton's statistics),
  ``GET /v2/models/stats``, ``POST /v2/repository/index``;
- ``POST /v2/models/{name}[/versions/1]/infer``: one input tensor named
  ``input``, first axis = batch, as JSON or with the binary tensor data
  extension. A joint model returns its task kind's answer tensors (a
  classification's ``predictions`` and ``probabilities``; see
  :mod:`ebjr.tasks`), then ``scores`` and ``answered_by``, and ``parameters`` with the
  threshold in use, the router and ``degraded`` (routed rows answered by the
  student because the teacher failed); a plain model returns ``logits``;
- ``POST /v2/models/{name}/predict``: ``{"instances": [...]}`` in, JSON out;
- ``GET|PUT /v2/models/{name}/threshold``: the live knob (writes need
  ``Authorization: Bearer <admin token>``);
- ``GET /v2/models/{name}/curve``, ``GET /v2/models/{name}/routing_stats``;
- ``GET /metrics`` (Prometheus), ``GET /`` (the demo page).

Request bodies are JSON whatever their Content-Type says (Triton's client
sends none), optionally gzip- or deflate-encoded. Errors are
``{"error": message}``: 400 bad input, 401/403 auth, 404 unknown model or
version, 408 headers or body too slow, 413 too large, 429 queue full, 502 the
model failed (it raised, or emitted NaN or infinity), and 503 not ready,
shutting down, timed out or teacher unavailable (policy ``error``), the last
two with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ebjr._version import __version__
from ebjr.exceptions import EBJRError, InputError, Overloaded
from ebjr.joint.cascade_model import CascadeModel
from ebjr.serve.bodies import describe
from ebjr.serve.cascade_engine import CascadeEngine
from ebjr.serve.edge import BodyGuard, BrowserGuard, RequestEdge, request_id_of
from ebjr.serve.engine import JointEngine, ModelEngine
from ebjr.serve.errors import answer_for
from ebjr.serve.process import prepare_process
from ebjr.serve.protocol import (
    FeedbackRequest,
    InferRequest,
    PredictRequest,
    RepositoryIndexRequest,
    ThresholdUpdate,
)
from ebjr.serve.remote import RemoteTeacher
from ebjr.serve.routes import knob, operations, protocol
from ebjr.serve.settings import ServeSettings, check_task
from ebjr.serve.state import AppState

__all__ = ["create_app", "install", "load_models"]

log = logging.getLogger("ebjr.serve")

#: request bodies that routes parse themselves (any Content-Type), for the OpenAPI document
_BODIES: tuple[type[BaseModel], ...] = (InferRequest, PredictRequest, ThresholdUpdate,
                                        FeedbackRequest,
                                        RepositoryIndexRequest)


def load_models(s: ServeSettings) -> tuple[Any, Any]:
    """The model(s) ``s`` serves, loaded: ``(JointModel, CascadeModel or adapter, bundle)``.

    Raises:
        BundleError: anything wrong with the bundle or its models.
    """
    from ebjr.bundle import persist

    prepare_process(s.torch_threads, s.reuse_freed_memory)
    trust = {"allow_factories": s.allow_factories, "allow_torchscript": s.allow_torchscript}
    if s.role == "joint":
        # with a remote teacher the engine calls it (RemoteTeacher); the model only routes
        joint = persist.load(s.bundle, student_side=s.remote_teacher is not None, **trust)
        if isinstance(joint, CascadeModel):
            _check_cascade_settings(s, joint)
        else:
            check_task(s, joint.task)
        return joint, joint.bundle  # type: ignore[attr-defined]
    model, bundle = persist.load_model(s.bundle, s.role, **trust)
    check_task(s, bundle.make_task())
    return model, bundle


def _check_cascade_settings(s: ServeSettings, model: CascadeModel) -> None:
    """The settings that apply to a pair and not to a cascade, refused before serving."""
    if s.remote_teacher or model.elsewhere:
        raise InputError(f"{s.bundle!r} is a cascade of {len(model.stages)} models: "
                         "--remote-teacher applies to a student/teacher bundle (a cascade's "
                         "later stages run elsewhere on Ray: ebjr serve BUNDLE --ray)")
    if s.load_mode is not None:
        raise InputError("the load-aware threshold (--load-mode) moves one threshold; a "
                         "cascade has one per stage: serve it without --load-mode")


def install(state: AppState, models: tuple[Any, Any]) -> None:
    """Make loaded ``models`` (:func:`load_models`) the app's engine."""
    model, state.bundle = models
    s = state.settings
    if isinstance(model, CascadeModel):
        _check_cascade_settings(s, model)
        state.engine = CascadeEngine(model, s, state.metrics, bundle=state.bundle)
    elif s.role == "joint":
        remote = RemoteTeacher(s, state.metrics) if s.remote_teacher else None
        state.engine = JointEngine(model, s, state.metrics, remote)
    else:
        state.engine = ModelEngine(model, s, state.metrics, state.bundle.make_task())


def _load(state: AppState) -> None:
    install(state, load_models(state.settings))


def create_app(settings: ServeSettings, load: Any = None) -> FastAPI:
    """The inference service for ``settings`` (models load when the app starts).

    ``load(state)`` sets ``state.engine`` and ``state.bundle`` (default: the
    models of ``settings.bundle`` in this process; :mod:`ebjr.ray` passes one
    whose engine runs on Ray Serve: the same API either way).
    """
    state = AppState(settings)
    app = FastAPI(
        title="ebjr inference service",
        version=__version__,
        description="Energy-based joint reasoning over the Open Inference Protocol v2.",
        lifespan=_lifespan(state, _load if load is None else load),
    )
    app.state.ebjr = state
    _answer_errors(app)
    _guard(app, state)
    for routes in (protocol, knob, operations):
        app.include_router(routes.router)
    _with_body_schemas(app)
    return app


def _lifespan(state: AppState, load: Any) -> Any:
    """Load the models (off the event loop), serve, then drain: every queued request
    is answered before the engine stops."""
    s = state.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(None, load, state)
        running = state.engine
        if running is None:  # load sets it or raises
            raise RuntimeError("the models did not load")
        state.read_input_record()
        state.feedback = getattr(running, "feedback", None)  # labels that arrive later
        await running.start()
        state.ready = True
        log.info("serving %s %r from %s (loaded in %.1f s)", s.role, s.name, s.bundle,
                 time.perf_counter() - t0)
        try:
            yield
        finally:
            state.ready = False
            state.draining = True
            log.info("shutting down: finishing queued requests")
            await running.close()
            log.info("shut down: answered %d of %d accepted inference requests",
                     state.answered, state.accepted)

    return lifespan


def _error(request: Request, status: int, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error the service answers: ``{"error": message, "request_id": id}``."""
    body = {"error": message, "request_id": request_id_of(request.scope)}
    return JSONResponse(body, status_code=status, headers=headers)


def _answer_errors(app: FastAPI) -> None:
    """Errors as :mod:`ebjr.serve.errors` maps them (details of a 5xx go to the log only)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(request, 400, describe(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(EBJRError)
    async def ebjr(request: Request, exc: EBJRError) -> JSONResponse:
        answer = answer_for(exc)
        if answer.status >= 500:  # the detail is the operator's, not the client's
            log.error("request %s: %s", request_id_of(request.scope), exc)
        return _error(request, answer.status, answer.message, answer.headers)


def _guard(app: FastAPI, state: AppState) -> None:
    """The pure-ASGI edge (:mod:`ebjr.serve.edge`), outermost first: request id and
    counts (a full queue refused before the body is read), the browser rules, the body."""
    s = state.settings

    def check_room() -> None:
        if state.ready and state.engine is not None:
            try:
                state.engine.check_room()
            except Overloaded:
                state.metrics.shed.labels("queue_full").inc()
                raise

    def on_request(path: str) -> bool:
        if path.endswith(("/infer", "/predict")):
            state.accepted += 1
            return True
        return False

    def on_answer(counted: bool, status: int | None) -> None:
        if status is None:
            state.metrics.disconnects.inc()
        if counted:
            state.metrics.requests.labels(str(status or 499)).inc()
            state.answered += 1

    # add_middleware puts each new one outside the ones before it
    app.add_middleware(BodyGuard, limit=s.max_body_bytes, json_limit=s.max_json_bytes,
                       timeout_s=s.body_timeout_s, stopping=lambda: state.stopping())
    app.add_middleware(BrowserGuard, allowed_origins=s.allowed_origins,
                       allowed_hosts=s.allowed_hosts)
    app.add_middleware(RequestEdge, on_request=on_request, check_room=check_room,
                       on_answer=on_answer)


def _with_body_schemas(app: FastAPI) -> None:
    """Add the schemas of :data:`_BODIES` (and what they use) to the app's OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in _BODIES:
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in js.pop("$defs", {}).items():
                    comps.setdefault(name, sub)
                comps.setdefault(model.__name__, js)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
