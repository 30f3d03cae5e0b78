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
  extension. A joint model returns ``predictions``, ``probabilities``,
  ``scores`` and ``answered_by`` tensors, and ``parameters`` with the
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
import hashlib
import json
import logging
import math
import secrets
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ebjr.bundle import curve_point_at, json_safe
from ebjr.exceptions import EBJRError, InputError, ModelError, Overloaded, TeacherUnavailable
from ebjr.serve.bodies import BodyReader, describe
from ebjr.serve.edge import BodyGuard, BrowserGuard, RequestEdge, request_id_of
from ebjr.serve.engine import Engine, JointAnswer, JointEngine, ModelEngine
from ebjr.serve.errors import answer_for
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.protocol import (
    NUMERIC_DATATYPES,
    ErrorResponse,
    InferRequest,
    InferResponse,
    ModelConfig,
    ModelMetadata,
    PredictRequest,
    RepositoryIndexRequest,
    ServerMetadata,
    ThresholdUpdate,
    binary_inputs,
    check_finite,
    check_shape,
    datatype_of,
    decode_tensor,
    encode_tensor,
    split_body,
    tensor_bytes,
)
from ebjr.serve.remote import RemoteTeacher
from ebjr.serve.settings import ServeSettings

__all__ = ["create_app", "install", "load_models"]

log = logging.getLogger("ebjr.serve")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 408, 413, 429, 502, 503)
}
#: the one input tensor's name, and the model version every route answers to
INPUT_NAME = "input"
VERSION = "1"
#: protocol extensions this server implements (``GET /v2``)
EXTENSIONS = [
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "statistics",
    "parameters",
    "ebjr_threshold",
]
#: protocol datatype -> Triton's config name for it
_TRITON_TYPES = {**{k: f"TYPE_{k}" for k in NUMERIC_DATATYPES}, "BYTES": "TYPE_STRING"}


#: request bodies that routes parse themselves (any Content-Type), for the OpenAPI document
_BODIES = (InferRequest, PredictRequest, ThresholdUpdate, RepositoryIndexRequest)


def _json_schema(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """An OpenAPI request body for a route that parses its body itself."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": ref}}}}


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


class _TritonStats:
    """Request-level counters for Triton's statistics extension (nanoseconds)."""

    def __init__(self) -> None:
        self.inference_count = 0  # rows answered
        self.success = [0, 0]  # requests, ns
        self.fail = [0, 0]
        self.last_inference_ms = 0
        self.decode_ns = [0, 0]
        self.encode_ns = [0, 0]


class _State:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        self.engine: Engine | None = None
        self.bundle: Any = None
        self.ready = False
        self.draining = False
        self.row_shape: tuple[int, ...] | None = settings.input_shape
        self.accepted = 0  # inference requests that reached the app...
        self.answered = 0  # ...and those that got their response
        self.input_datatype = "FP32"
        self.stats = _TritonStats()
        self.stopping: Any = lambda: False  # set by ebjr.serve.serve: uvicorn is shutting down


def load_models(s: ServeSettings) -> tuple[Any, Any]:
    """The model(s) ``s`` serves, loaded: ``(JointModel or adapter, bundle)``.

    Raises:
        BundleError: anything wrong with the bundle or its models.
    """
    from ebjr.bundle import persist

    if s.torch_threads is not None:
        import torch

        torch.set_num_threads(s.torch_threads)
    trust = {"allow_factories": s.allow_factories, "allow_torchscript": s.allow_torchscript}
    if s.role == "joint":
        # with a remote teacher the engine calls it (RemoteTeacher); the model only routes
        joint = persist.load(s.bundle, student_side=s.remote_teacher is not None, **trust)
        return joint, joint.bundle  # type: ignore[attr-defined]
    return persist.load_model(s.bundle, s.role, **trust)


def install(state: _State, models: tuple[Any, Any]) -> None:
    """Make loaded ``models`` (:func:`load_models`) the app's engine."""
    model, state.bundle = models
    s = state.settings
    if s.role == "joint":
        remote = RemoteTeacher(s, state.metrics) if s.remote_teacher else None
        state.engine = JointEngine(model, s, state.metrics, remote)
    else:
        state.engine = ModelEngine(model, s, state.metrics)


def _load(state: _State) -> None:
    install(state, load_models(state.settings))


def _read_input_record(state: _State) -> None:
    """The input's row shape and datatype from the bundle's input record, if it has one."""
    spec = state.bundle.input or {}
    if state.row_shape is None and isinstance(spec.get("shape"), list):
        state.row_shape = tuple(int(d) for d in spec["shape"])
    if spec.get("datatype") in NUMERIC_DATATYPES:
        state.input_datatype = spec["datatype"]


def create_app(settings: ServeSettings, load: Any = None) -> FastAPI:
    """The inference service for ``settings`` (models load when the app starts).

    ``load(state)`` sets ``state.engine`` and ``state.bundle`` (default: the
    models of ``settings.bundle`` in this process; :mod:`ebjr.ray.serve` passes
    one whose engine calls Ray Serve deployments: the same API either way).
    """
    state = _State(settings)
    load = _load if load is None else load

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        await loop.run_in_executor(None, load, state)
        _read_input_record(state)
        running = state.engine
        if running is None:  # _load sets it or raises
            raise RuntimeError("the models did not load")
        running.start()
        state.ready = True
        log.info(
            "serving %s %r from %s (loaded in %.1f s)",
            settings.role,
            settings.name,
            settings.bundle,
            time.perf_counter() - t0,
        )
        try:
            yield
        finally:
            state.ready = False
            state.draining = True
            log.info("shutting down: finishing queued requests")
            await running.close()
            log.info("shut down: answered %d of %d accepted inference requests",
                     state.answered, state.accepted)

    app = FastAPI(
        title="ebjr inference service",
        version=_version(),
        description="Energy-based joint reasoning over the Open Inference Protocol v2.",
        lifespan=lifespan,
    )
    app.state.ebjr = state

    # ------------------------------------------------------------ errors
    def error(status: int, message: str, retry_after: float | None = None) -> JSONResponse:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def error_of(request: Request, status: int, message: str,
                 headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"error": message, "request_id": request_id_of(request.scope)}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_of(request, 400, describe(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return error_of(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(EBJRError)
    async def _ebjr(request: Request, exc: EBJRError) -> JSONResponse:
        answer = answer_for(exc)
        if answer.status >= 500:  # the detail is the operator's, not the client's
            log.error("request %s: %s", request_id_of(request.scope), exc)
        return error_of(request, answer.status, answer.message, answer.headers)

    # ------------------------------------------------------------ helpers
    def engine() -> Engine:
        if state.draining:
            raise HTTPException(503, "the server is shutting down", {"Retry-After": "1"})
        if not state.ready or state.engine is None:
            raise HTTPException(503, "the models are still loading", {"Retry-After": "1"})
        return state.engine

    def check_model(name: str, version: str | None = None) -> None:
        if name != settings.name:
            raise HTTPException(
                404, f"unknown model {name!r}; this server serves {settings.name!r}"
            )
        if version is not None and version != VERSION:
            raise HTTPException(
                404, f"unknown version {version!r} of model {name!r}; it has version {VERSION!r}"
            )

    bodies = BodyReader(settings.max_body_bytes, settings.max_json_bytes,
                        settings.max_json_elements, settings.max_concurrent_parses)

    async def body_of(request: Request) -> bytes:
        """The raw body, decompressed when Content-Encoding says gzip or deflate."""
        return bodies.decompress(await request.body(), request.headers.get("content-encoding"))

    async def parse(raw: bytes, model: type[BaseModel]) -> Any:
        """``raw`` as ``model``, whatever the Content-Type said, off the loop when large."""
        return await bodies.parse(raw, model)

    def joint_engine(name: str) -> Any:
        check_model(name)
        e = engine()
        if e.kind != "joint":
            raise HTTPException(
                404,
                f"model {name!r} is a plain {settings.role} model; "
                "it has no threshold, curve or routing stats",
            )
        return e

    async def run(x: np.ndarray) -> tuple[Any, float]:
        """Run the engine on ``x`` with the request timeout; count the outcome."""
        e = engine()
        t0 = time.perf_counter()
        ok = False
        try:
            result = await asyncio.wait_for(e.infer(x), settings.request_timeout_s)
            ok = True
        except Overloaded as exc:
            state.metrics.shed.labels("shutting_down" if exc.closing else "queue_full").inc()
            raise
        except TeacherUnavailable:
            state.metrics.shed.labels("teacher_unavailable").inc()
            raise
        except TimeoutError:
            state.metrics.shed.labels("timeout").inc()
            raise HTTPException(
                503,
                f"no answer within {settings.request_timeout_s} s; retry later",
                {"Retry-After": "1"},
            ) from None
        except ModelError:
            if state.row_shape is None:
                log.warning("this server does not know the model's input shape: start it with "
                            "--input-shape, or save the bundle with an input record, to have "
                            "wrongly shaped inputs refused with 400")
            raise
        finally:
            if not ok:
                state.stats.fail[0] += 1
                state.stats.fail[1] += int(1e9 * (time.perf_counter() - t0))
        elapsed = time.perf_counter() - t0
        st = state.stats
        st.success[0] += 1
        st.success[1] += int(1e9 * elapsed)
        st.inference_count += len(x)
        st.last_inference_ms = int(time.time() * 1000)
        path = result.path if isinstance(result, JointAnswer) else settings.role
        state.metrics.latency.labels(path).observe(elapsed)
        if isinstance(result, JointAnswer):
            for who, c in result.counts().items():
                state.metrics.rows.labels(who).inc(c)
        else:
            state.metrics.rows.labels(settings.role).inc(len(x))
        return result, elapsed

    _with_body_schemas(app)

    def check_room() -> None:
        if state.ready and state.engine is not None:
            try:
                state.engine.check_room()
            except Overloaded:
                state.metrics.shed.labels("queue_full").inc()
                raise

    def on_answer(counted: bool, status: int | None) -> None:
        if status is None:
            state.metrics.disconnects.inc()
        if counted:
            state.metrics.requests.labels(str(status or 499)).inc()
            state.answered += 1

    def on_request(path: str) -> bool:
        if path.endswith(("/infer", "/predict")):
            state.accepted += 1
            return True
        return False

    # outermost first: request id and counts, the browser rules, then the body
    app.add_middleware(BodyGuard, limit=settings.max_body_bytes,
                       json_limit=settings.max_json_bytes, timeout_s=settings.body_timeout_s,
                       stopping=lambda: state.stopping())
    app.add_middleware(BrowserGuard, allowed_origins=settings.allowed_origins,
                       allowed_hosts=settings.allowed_hosts)
    app.add_middleware(RequestEdge, on_request=on_request, check_room=check_room,
                       on_answer=on_answer)

    def both_versions(method: str, suffix: str, impl: Any, **route: Any) -> None:
        """Route ``/v2/models/{name}<suffix>`` and its ``/versions/{version}`` twin to ``impl``."""

        async def plain(name: str, request: Request) -> Any:
            return await impl(name, None, request)

        async def versioned(name: str, version: str, request: Request) -> Any:
            return await impl(name, version, request)

        for path, endpoint in ((f"/v2/models/{{name}}{suffix}", plain),
                               (f"/v2/models/{{name}}/versions/{{version}}{suffix}", versioned)):
            app.add_api_route(path, endpoint, methods=[method], **route)

    # ------------------------------------------------------------ protocol v2
    @app.get("/v2", response_model=ServerMetadata)
    async def server_metadata() -> dict:
        return {"name": "ebjr", "version": _version(), "extensions": EXTENSIONS}

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", responses={503: {"model": ErrorResponse}})
    async def ready() -> Any:
        if not state.ready:
            return error(503, "not ready", 1)
        return {"ready": True}

    @app.post("/v2/repository/index", responses=_ERRORS,
              openapi_extra=_json_schema(RepositoryIndexRequest, required=False))
    async def repository_index(request: Request) -> list[dict]:
        """Triton's model repository extension: the one model this server serves."""
        raw = await body_of(request)
        only_ready = (await parse(raw, RepositoryIndexRequest)).ready if raw.strip() else None
        entry = {"name": settings.name, "version": VERSION,
                 "state": "READY" if state.ready else "LOADING"}
        if not state.ready:
            entry["reason"] = "the models are still loading"
        return [] if only_ready and not state.ready else [entry]

    def stats_of() -> dict:
        """This model's statistics in Triton's schema."""
        st = state.stats
        batches = state.engine.front.stats if state.engine is not None else None

        def dur(count: int, ns: int) -> dict:
            return {"count": count, "ns": ns}

        return {
            "name": settings.name,
            "version": VERSION,
            "last_inference": st.last_inference_ms,
            "inference_count": st.inference_count,
            "execution_count": batches.executions if batches else 0,
            "inference_stats": {
                "success": dur(*st.success),
                "fail": dur(*st.fail),
                "queue": dur(batches.requests, batches.queue_ns) if batches else dur(0, 0),
                "compute_input": dur(*st.decode_ns),
                "compute_infer": dur(batches.requests, batches.compute_ns)
                if batches
                else dur(0, 0),
                "compute_output": dur(*st.encode_ns),
                "cache_hit": dur(0, 0),
                "cache_miss": dur(0, 0),
            },
            "batch_stats": [
                {"batch_size": size, "compute_infer": dur(count, ns)}
                for size, (count, ns) in sorted(batches.batches.items())
            ]
            if batches
            else [],
        }

    @app.get("/v2/models/stats")
    async def all_stats() -> dict:
        """Triton's statistics extension for every model (this server has one)."""
        return {"model_stats": [stats_of()]}

    async def _model_ready(name: str, version: str | None, request: Request) -> Any:
        check_model(name, version)
        if not state.ready:
            return error(503, "not ready", 1)
        return {"name": name, "ready": True}

    both_versions("GET", "/ready", _model_ready, responses=_ERRORS)

    async def _metadata(name: str, version: str | None, request: Request) -> dict:
        check_model(name, version)
        e = engine()
        shape = [-1, *(state.row_shape or [-1])]
        params: dict[str, Any] = {"role": settings.role}
        if e.kind == "joint":
            je: Any = e
            params.update(
                router=je.router.to_spec(),
                threshold=json_safe(await je.threshold()),
                costs=state.bundle.costs,
                target=state.bundle.target,
                calibration=json_safe(state.bundle.calibration),
                fallback=settings.fallback,
            )
            if settings.remote_teacher:
                params["remote_teacher"] = settings.remote_teacher
        return {
            "name": name,
            "versions": [VERSION],
            "platform": _platform(e),
            "inputs": [{"name": INPUT_NAME, "datatype": state.input_datatype, "shape": shape}],
            "outputs": _outputs_of(e),
            "parameters": params,
        }

    both_versions("GET", "", _metadata, response_model=ModelMetadata, responses=_ERRORS,
                  response_model_exclude_none=True)

    async def _config(name: str, version: str | None, request: Request) -> dict:
        check_model(name, version)
        e = engine()
        dims = list(state.row_shape) if state.row_shape else [-1]
        output = [
            {"name": o["name"], "data_type": _TRITON_TYPES[o["datatype"]],
             "dims": o["shape"][1:] or [1]}
            for o in _outputs_of(e)
        ]
        return {
            "name": name,
            "platform": _platform(e),
            "backend": "ebjr",
            "max_batch_size": settings.max_request_rows,
            "input": [{"name": INPUT_NAME, "data_type": _TRITON_TYPES[state.input_datatype],
                       "dims": dims}],
            "output": output,
            "dynamic_batching": {
                "preferred_batch_size": [settings.max_batch_size],
                "max_queue_delay_microseconds": int(settings.max_wait_ms * 1000),
            },
            "version_policy": {"specific": {"versions": [int(VERSION)]}},
        }

    both_versions("GET", "/config", _config, response_model=ModelConfig, responses=_ERRORS,
                  response_model_exclude_none=True)

    async def _stats(name: str, version: str | None, request: Request) -> dict:
        check_model(name, version)
        return {"model_stats": [stats_of()]}

    both_versions("GET", "/stats", _stats, responses=_ERRORS)

    async def _infer(name: str, version: str | None, request: Request) -> Response:
        check_model(name, version)
        t0 = time.perf_counter()
        header, rest = split_body(
            await body_of(request), request.headers.get("inference-header-content-length")
        )
        body: InferRequest = await parse(header, InferRequest)
        if len(body.inputs) != 1:
            raise InputError(
                f"this model takes one input, {INPUT_NAME!r}; got {len(body.inputs)}: "
                f"{[t.name for t in body.inputs]}"
            )
        blobs = binary_inputs(body, rest)
        t = body.inputs[0]
        if t.name != INPUT_NAME:
            raise InputError(
                f"unknown input {t.name!r}; this model's input is {INPUT_NAME!r} "
                f"(see GET /v2/models/{name})"
            )
        if t.datatype != state.input_datatype:
            raise InputError(
                f"input {t.name!r}: datatype {t.datatype!r} does not match the model's "
                f"{state.input_datatype!r} (see GET /v2/models/{name})"
            )
        x = decode_tensor(t, state.row_shape, settings.max_request_rows, blobs[0])
        state.stats.decode_ns[0] += 1
        state.stats.decode_ns[1] += int(1e9 * (time.perf_counter() - t0))
        result, _ = await run(x)
        t1 = time.perf_counter()
        if isinstance(result, np.ndarray):
            tensors = [("logits", result.astype(np.float32))]
            params: dict[str, Any] = {}
        else:
            tensors = [
                ("predictions", result.predictions.astype(np.int64)),
                ("probabilities", result.probabilities.astype(np.float32)),
                ("scores", _finite_array(result.scores)),
                ("answered_by", result.answered_by.astype(str)),
            ]
            params = {
                "threshold": json_safe(result.threshold),
                "degraded": result.degraded,
                "router": joint_engine(name).router.name,
                "teacher_rows": int((result.answered_by != "student").sum()),
            }
        binary_all = bool((body.parameters or {}).get("binary_data_output", False))
        if body.outputs:
            known = [n for n, _ in tensors]
            unknown = sorted({o.name for o in body.outputs} - set(known))
            if unknown:
                raise InputError(f"unknown outputs {unknown}; this model has {known}")
            wanted = {}
            for o in body.outputs:
                p = o.parameters or {}
                if p.get("classification") or p.get("class_count"):
                    raise InputError(
                        f"output {o.name!r}: the classification extension is not supported; "
                        "read 'predictions' and 'probabilities' instead"
                    )
                wanted[o.name] = bool(p.get("binary_data", binary_all))
        else:
            wanted = {n: binary_all for n, _ in tensors}
        outputs, blobs_out = [], []
        by_name = dict(tensors)
        for n, binary in wanted.items():  # in the order asked for
            arr = by_name[n]
            if binary:
                data = tensor_bytes(arr)
                outputs.append({"name": n, "shape": list(arr.shape), "datatype": datatype_of(arr),
                                "parameters": {"binary_data_size": len(data)}})
                blobs_out.append(data)
            else:
                outputs.append(encode_tensor(n, arr))
        payload: dict[str, Any] = {"model_name": name, "model_version": VERSION}
        if body.id is not None:
            payload["id"] = body.id
        if params:
            payload["parameters"] = params
        payload["outputs"] = outputs
        head = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        state.stats.encode_ns[0] += 1
        state.stats.encode_ns[1] += int(1e9 * (time.perf_counter() - t1))
        if not blobs_out:
            return Response(head, media_type="application/json")
        return Response(
            head + b"".join(blobs_out),
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(head))},
        )

    both_versions("POST", "/infer", _infer, response_model=InferResponse, responses=_ERRORS,
                  openapi_extra=_json_schema(InferRequest))

    @app.post("/v2/models/{name}/predict", responses=_ERRORS,
              openapi_extra=_json_schema(PredictRequest))
    async def predict(name: str, request: Request) -> dict:
        check_model(name)
        body: PredictRequest = await parse(await body_of(request), PredictRequest)
        try:
            x = np.asarray(body.instances, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"instances must be equally shaped lists of numbers: {exc}") from None
        check_shape("instances", x.shape, state.row_shape, settings.max_request_rows)
        check_finite("instances", x)
        x = x.astype(np.float32)
        result, elapsed = await run(x)
        if isinstance(result, np.ndarray):
            return {"logits": result.tolist(), "latency_ms": 1e3 * elapsed}
        return {
            "predictions": result.predictions.tolist(),
            "probabilities": result.probabilities.tolist(),
            "scores": _finite_array(result.scores).tolist(),
            "answered_by": result.answered_by.tolist(),
            "threshold": json_safe(result.threshold),
            "degraded": result.degraded,
            "latency_ms": 1e3 * elapsed,
        }

    # ------------------------------------------------------------ the live knob
    async def threshold_state(e: Any) -> dict:
        info = await e.threshold_info()
        return {
            "threshold": json_safe(info["threshold"]),
            "effective_threshold": json_safe(info["effective_threshold"]),
            "calibrated_threshold": json_safe(state.bundle.threshold),
            "router": e.router.name,
            "load_control": json_safe(info["load_control"]),
            "writable": settings.admin_token is not None,
        }

    @app.get("/v2/models/{name}/threshold", responses=_ERRORS)
    async def get_threshold(name: str) -> dict:
        return await threshold_state(joint_engine(name))

    @app.put("/v2/models/{name}/threshold", responses=_ERRORS,
             openapi_extra=_json_schema(ThresholdUpdate))
    async def set_threshold(
        name: str,
        request: Request,
        authorization: str | None = Header(default=None),
    ) -> dict:
        e = joint_engine(name)
        if settings.admin_token is None:
            raise HTTPException(
                403,
                "threshold writes are disabled: start the server with "
                "--admin-token (or EBJR_ADMIN_TOKEN) to allow them",
            )
        if not _bearer_matches(authorization, settings.admin_token):
            raise HTTPException(
                401,
                "a valid 'Authorization: Bearer <admin token>' header is "
                "required to change the threshold",
                {"WWW-Authenticate": "Bearer"},
            )
        body: ThresholdUpdate = await parse(await body_of(request), ThresholdUpdate)
        if (body.threshold is None) == (body.teacher_fraction is None):
            raise InputError("give exactly one of 'threshold' or 'teacher_fraction'")
        if body.threshold is not None:
            if not math.isfinite(body.threshold):
                raise InputError(f"threshold must be a finite number, got {body.threshold!r}")
            new = body.threshold
        elif body.teacher_fraction is not None:
            new = _threshold_for_share(state.bundle, body.teacher_fraction)
        else:  # unreachable: exactly one of the two was given
            raise InputError("give exactly one of 'threshold' or 'teacher_fraction'")
        old = await e.set_threshold(new)
        client = request.client.host if request.client else "?"
        log.warning(
            "threshold of %r changed from %r to %r by %s (%s)",
            name,
            old,
            new,
            client,
            json.dumps(body.model_dump(exclude_none=True)),
        )
        return {"old_threshold": json_safe(old), **(await threshold_state(e))}

    @app.get("/v2/models/{name}/curve", responses=_ERRORS)
    async def curve(name: str) -> dict:
        e = joint_engine(name)
        c = state.bundle.curve
        return {
            "curve": c,
            "costs": state.bundle.costs,
            "calibrated_threshold": json_safe(state.bundle.threshold),
            "operating_point": curve_point_at(c, await e.threshold()),
        }

    @app.get("/v2/models/{name}/routing_stats", responses=_ERRORS)
    async def routing_stats(name: str) -> dict:
        e = joint_engine(name)
        return {
            "counts": await e.counts(),
            "recent_teacher_share": state.metrics.recent_teacher_share(),
            "queue_rows": await e.queue_rows(),
            "operating_point": curve_point_at(state.bundle.curve, await e.threshold()),
            **(await threshold_state(e)),
        }

    # ------------------------------------------------------------ metrics and demo
    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        if state.engine is not None:
            for stage, rows in (await state.engine.queue_rows()).items():
                state.metrics.queue_rows.labels(stage).set(rows)
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    page = resources.files("ebjr.serve").joinpath("static/index.html").read_text("utf-8")
    # the name is checked (settings.MODEL_NAME), and embedded as JSON that cannot end a script
    page = page.replace("__MODEL_NAME__", _script_json(settings.name))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo() -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        return HTMLResponse(page.replace("<script>", f'<script nonce="{nonce}">'), headers={
            "Content-Security-Policy": (
                f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' "
                "'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
                "object-src 'none'; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'"),
        })

    return app


def _version() -> str:
    from ebjr._version import __version__

    return __version__


def _platform(e: Any) -> str:
    return "ebjr_joint" if e.kind == "joint" else "ebjr_model"


def _outputs_of(e: Any) -> list[dict[str, Any]]:
    """The output tensors' metadata (the infer route returns them in this order)."""
    if e.kind == "joint":
        return [
            {"name": "predictions", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, -1]},
            {"name": "scores", "datatype": "FP64", "shape": [-1]},
            {"name": "answered_by", "datatype": "BYTES", "shape": [-1]},
        ]
    return [{"name": "logits", "datatype": "FP32", "shape": [-1, -1]}]


def _bearer_matches(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time (as SHA-256 digests)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    a = hashlib.sha256(given.strip().encode()).digest()
    b = hashlib.sha256(token.encode()).digest()
    return secrets.compare_digest(a, b)


def _script_json(value: Any) -> str:
    """``value`` as JSON safe inside an HTML ``<script>`` (no ``<``, ``>`` or ``&``)."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite_array(a: np.ndarray) -> np.ndarray:
    big = np.finfo(np.float64).max
    return np.nan_to_num(np.asarray(a, dtype=np.float64), posinf=big, neginf=-big)


def _threshold_for_share(bundle: Any, share: float) -> float:
    """The largest stored threshold whose calibration teacher share is at most ``share``."""
    curve = bundle.curve
    if not curve:
        raise InputError(
            "this bundle stores no trade-off curve, so a teacher share cannot be "
            "turned into a threshold; set 'threshold' directly"
        )
    frac = np.asarray(curve["teacher_fraction"], dtype=np.float64)
    ok = np.flatnonzero(frac <= share + 1e-12)
    return float(curve["threshold"][int(ok[-1])]) if ok.size else float(curve["threshold"][0])
