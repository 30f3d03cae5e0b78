"""The FastAPI application: Open Inference Protocol v2 plus ebjr's live knob, stats and demo.

``create_app(settings)`` builds the app; models load in its lifespan, so the
server answers ``/v2/health/live`` at once and ``/v2/health/ready`` when the
models are in. Endpoints (``{name}`` is the served model's name):

- ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
  ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``;
- ``POST /v2/models/{name}/infer``: one input tensor, first axis = batch.
  A joint model returns ``predictions``, ``probabilities``, ``scores`` and
  ``answered_by`` tensors, and ``parameters`` with the threshold in use, the
  router and ``degraded`` (routed rows answered by the student because the
  teacher failed); a plain model returns ``logits``;
- ``POST /v2/models/{name}/predict``: ``{"instances": [...]}`` in, JSON out;
- ``GET|PUT /v2/models/{name}/threshold``: the live knob (writes need
  ``Authorization: Bearer <admin token>``);
- ``GET /v2/models/{name}/curve``, ``GET /v2/models/{name}/stats``;
- ``GET /metrics`` (Prometheus), ``GET /`` (the demo page).

Errors are ``{"error": message}``: 400 bad input, 401/403 auth, 404 unknown
model, 413 too large, 429 queue full and 503 not ready, shutting down, timed
out or teacher unavailable (policy ``error``), the last two with Retry-After.
"""

from __future__ import annotations

import asyncio
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
from starlette.exceptions import HTTPException

from ebjr.bundle import json_safe
from ebjr.exceptions import EBJRError, InputError
from ebjr.serve.batcher import Overloaded
from ebjr.serve.engine import JointEngine, ModelEngine, TeacherUnavailable
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.protocol import (
    ErrorResponse,
    InferRequest,
    InferResponse,
    ModelMetadata,
    PredictRequest,
    ServerMetadata,
    ThresholdUpdate,
    check_finite,
    check_shape,
    decode_tensor,
    encode_tensor,
)
from ebjr.serve.remote import RemoteTeacher
from ebjr.serve.settings import ServeSettings

__all__ = ["create_app"]

log = logging.getLogger("ebjr.serve")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 429, 503)
}


class _BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body exceeds this server's limit of {self.limit} bytes"
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await JSONResponse({"error": message}, 413)(scope, receive, send)
                    return
        # read the body up to the limit before the app sees it (a streamed body has no length)
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await JSONResponse({"error": message}, 413)(scope, receive, send)
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


class _State:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        self.engine: JointEngine | ModelEngine | None = None
        self.bundle: Any = None
        self.ready = False
        self.draining = False
        self.row_shape: tuple[int, ...] | None = settings.input_shape
        self.accepted = 0  # inference requests that reached the app...
        self.answered = 0  # ...and those that got their response


def _load(state: _State) -> None:
    from ebjr import persist

    s = state.settings
    if s.torch_threads is not None:
        import torch

        torch.set_num_threads(s.torch_threads)
    if s.role == "joint":
        teacher = None
        if s.remote_teacher:
            from ebjr.adapters.remote import RemoteV2Adapter

            teacher = RemoteV2Adapter(
                s.remote_teacher,
                input_name=s.teacher_input_name,
                output_name=s.teacher_output_name,
                timeout=s.teacher_timeout_s,
                retries=s.teacher_retries,
            )
        joint = persist.load(s.bundle, allow_factories=s.allow_factories, teacher=teacher)
        state.bundle = joint.bundle  # type: ignore[attr-defined]
        remote = RemoteTeacher(s, state.metrics) if s.remote_teacher else None
        state.engine = JointEngine(joint, s, state.metrics, remote)
    else:
        adapter, state.bundle = persist.load_model(
            s.bundle, s.role, allow_factories=s.allow_factories
        )
        state.engine = ModelEngine(adapter, s, state.metrics)
    if state.row_shape is None:
        spec = state.bundle.extra.get("input") or {}
        if isinstance(spec.get("shape"), list):
            state.row_shape = tuple(int(d) for d in spec["shape"])


def create_app(settings: ServeSettings) -> FastAPI:
    """The inference service for ``settings`` (models load when the app starts)."""
    state = _State(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        await loop.run_in_executor(None, _load, state)
        state.engine.start()
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
            await state.engine.close()
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

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
        return error(400, "invalid request: " + "; ".join(parts))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError) -> JSONResponse:
        return error(400, str(exc))

    # ------------------------------------------------------------ helpers
    def engine() -> JointEngine | ModelEngine:
        if state.draining:
            raise HTTPException(503, "the server is shutting down", {"Retry-After": "1"})
        if not state.ready or state.engine is None:
            raise HTTPException(503, "the models are still loading", {"Retry-After": "1"})
        return state.engine

    def check_model(name: str) -> None:
        if name != settings.name:
            raise HTTPException(
                404, f"unknown model {name!r}; this server serves {settings.name!r}"
            )

    def joint_engine(name: str) -> JointEngine:
        check_model(name)
        e = engine()
        if not isinstance(e, JointEngine):
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
        try:
            result = await asyncio.wait_for(e.infer(x), settings.request_timeout_s)
        except Overloaded as exc:
            reason = "shutting_down" if exc.closing else "queue_full"
            state.metrics.shed.labels(reason).inc()
            raise HTTPException(
                503 if exc.closing else 429,
                str(exc),
                {"Retry-After": str(math.ceil(exc.retry_after))},
            ) from None
        except TeacherUnavailable as exc:
            state.metrics.shed.labels("teacher_unavailable").inc()
            raise HTTPException(
                503,
                f"{exc} (fallback policy 'error')",
                {"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
            ) from None
        except TimeoutError:
            state.metrics.shed.labels("timeout").inc()
            raise HTTPException(
                503,
                f"no answer within {settings.request_timeout_s} s; retry later",
                {"Retry-After": "1"},
            ) from None
        except InputError:
            raise
        except EBJRError as exc:
            raise InputError(f"the model could not run on this input: {exc}") from None
        except (RuntimeError, ValueError, TypeError) as exc:
            # the inputs passed every check we can make, and the model refused them
            log.warning("model error on inputs of shape %s: %s", x.shape, exc)
            raise InputError(
                f"the model could not run on inputs of shape {list(x.shape)}: "
                f"{str(exc).splitlines()[0][:300]}"
            ) from None
        elapsed = time.perf_counter() - t0
        path = result.path if hasattr(result, "path") else settings.role
        state.metrics.latency.labels(path).observe(elapsed)
        if hasattr(result, "answered_by"):
            for who in ("student", "teacher", "student_fallback"):
                c = int((result.answered_by == who).sum())
                if c:
                    state.metrics.rows.labels(who).inc(c)
        else:
            state.metrics.rows.labels(settings.role).inc(len(x))
        return result, elapsed

    @app.middleware("http")
    async def _count(request: Request, call_next: Any) -> Response:
        if not request.url.path.endswith(("/infer", "/predict")):
            return await call_next(request)
        state.accepted += 1
        try:
            if state.ready and state.engine is not None:
                state.engine.check_room()  # a full queue refuses before the body is parsed
            response = await call_next(request)
        except Overloaded as exc:
            state.metrics.shed.labels("queue_full").inc()
            response = error(429, str(exc), exc.retry_after)
        except Exception:
            log.exception("unexpected error on %s", request.url.path)
            response = error(500, "internal error; the server log has the details")
        state.metrics.requests.labels(str(response.status_code)).inc()
        state.answered += 1
        return response

    # ------------------------------------------------------------ protocol v2
    @app.get("/v2", response_model=ServerMetadata)
    async def server_metadata() -> dict:
        return {"name": "ebjr", "version": _version(), "extensions": ["ebjr_threshold"]}

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", responses={503: {"model": ErrorResponse}})
    async def ready() -> Any:
        if not state.ready:
            return error(503, "not ready", 1)
        return {"ready": True}

    @app.get("/v2/models/{name}/ready", responses=_ERRORS)
    async def model_ready(name: str) -> Any:
        check_model(name)
        if not state.ready:
            return error(503, "not ready", 1)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}", response_model=ModelMetadata, responses=_ERRORS)
    async def model_metadata(name: str) -> dict:
        check_model(name)
        e = engine()
        shape = [-1, *(state.row_shape or [-1])]
        params: dict[str, Any] = {"role": settings.role}
        if isinstance(e, JointEngine):
            params.update(
                router=e.joint.router.to_spec(),
                threshold=e.joint.threshold,
                costs=state.bundle.costs,
                target=state.bundle.target,
                calibration=json_safe(state.bundle.calibration),
                remote_teacher=settings.remote_teacher,
                fallback=settings.fallback,
            )
            outputs = [
                {"name": "predictions", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "scores", "datatype": "FP64", "shape": [-1]},
                {"name": "answered_by", "datatype": "BYTES", "shape": [-1]},
            ]
            platform = "ebjr_joint"
        else:
            outputs = [{"name": "logits", "datatype": "FP32", "shape": [-1, -1]}]
            platform = "ebjr_model"
        return {
            "name": name,
            "versions": [],
            "platform": platform,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": shape}],
            "outputs": outputs,
            "parameters": params,
        }

    @app.post("/v2/models/{name}/infer", response_model=InferResponse, responses=_ERRORS)
    async def infer(name: str, body: InferRequest) -> dict:
        check_model(name)
        x = decode_tensor(body.inputs[0], state.row_shape, settings.max_request_rows)
        result, _ = await run(x)
        wanted = {o.name for o in body.outputs} if body.outputs else None
        if isinstance(result, np.ndarray):
            outputs = [encode_tensor("logits", result.astype(np.float32))]
            params: dict[str, Any] = {}
        else:
            outputs = [
                encode_tensor("predictions", result.predictions.astype(np.int64)),
                encode_tensor("probabilities", result.probabilities.astype(np.float32)),
                encode_tensor("scores", _finite_array(result.scores)),
                encode_tensor("answered_by", result.answered_by.astype(str)),
            ]
            params = {
                "threshold": json_safe(result.threshold),
                "degraded": result.degraded,
                "router": state.engine.joint.router.name,
                "teacher_rows": int((result.answered_by != "student").sum()),
            }
        if wanted is not None:
            known = {o["name"] for o in outputs}
            unknown = wanted - known
            if unknown:
                raise InputError(
                    f"unknown outputs {sorted(unknown)}; this model has {sorted(known)}"
                )
            outputs = [o for o in outputs if o["name"] in wanted]
        return {"model_name": name, "id": body.id, "parameters": params, "outputs": outputs}

    @app.post("/v2/models/{name}/predict", responses=_ERRORS)
    async def predict(name: str, body: PredictRequest) -> dict:
        check_model(name)
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
    def threshold_state(e: JointEngine) -> dict:
        return {
            "threshold": json_safe(e.joint.threshold),
            "effective_threshold": json_safe(e.effective_threshold),
            "calibrated_threshold": json_safe(state.bundle.threshold),
            "router": e.joint.router.name,
            "load_control": None
            if e.control is None
            else {
                "mode": e.control.mode,
                "budget": e.control.budget,
                "lower": json_safe(e.control.lower),
                "allowed_share": e.control.allowed_share,
            },
            "writable": settings.admin_token is not None,
        }

    @app.get("/v2/models/{name}/threshold", responses=_ERRORS)
    async def get_threshold(name: str) -> dict:
        return threshold_state(joint_engine(name))

    @app.put("/v2/models/{name}/threshold", responses=_ERRORS)
    async def set_threshold(
        name: str,
        body: ThresholdUpdate,
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
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), settings.admin_token.encode()):
            raise HTTPException(
                401,
                "a valid 'Authorization: Bearer <admin token>' header is "
                "required to change the threshold",
                {"WWW-Authenticate": "Bearer"},
            )
        if (body.threshold is None) == (body.teacher_fraction is None):
            raise InputError("give exactly one of 'threshold' or 'teacher_fraction'")
        if body.threshold is not None:
            if not math.isfinite(body.threshold):
                raise InputError(f"threshold must be a finite number, got {body.threshold!r}")
            new = body.threshold
        else:
            new = _threshold_for_share(state.bundle, body.teacher_fraction)
        old = e.joint.set_threshold(new)
        state.metrics.threshold.labels("set").set(new)
        client = request.client.host if request.client else "?"
        log.warning(
            "threshold of %r changed from %r to %r by %s (%s)",
            name,
            old,
            new,
            client,
            json.dumps(body.model_dump(exclude_none=True)),
        )
        return {"old_threshold": json_safe(old), **threshold_state(e)}

    @app.get("/v2/models/{name}/curve", responses=_ERRORS)
    async def curve(name: str) -> dict:
        e = joint_engine(name)
        c = state.bundle.extra.get("curve")
        return {
            "curve": c,
            "costs": state.bundle.costs,
            "calibrated_threshold": json_safe(state.bundle.threshold),
            "operating_point": _point_at(c, e.joint.threshold),
        }

    @app.get("/v2/models/{name}/stats", responses=_ERRORS)
    async def stats(name: str) -> dict:
        e = joint_engine(name)
        return {
            "counts": e.joint.counts(),
            "recent_teacher_share": state.metrics.recent_teacher_share(),
            "queue_rows": e.queue_rows(),
            "operating_point": _point_at(state.bundle.extra.get("curve"), e.joint.threshold),
            **threshold_state(e),
        }

    # ------------------------------------------------------------ metrics and demo
    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        if state.engine is not None:
            for stage, rows in state.engine.queue_rows().items():
                state.metrics.queue_rows.labels(stage).set(rows)
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo() -> HTMLResponse:
        page = resources.files("ebjr.serve").joinpath("static/index.html").read_text("utf-8")
        return HTMLResponse(page.replace("__MODEL_NAME__", json.dumps(settings.name)))

    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    return app


def _version() -> str:
    from ebjr import __version__

    return __version__


def _finite_array(a: np.ndarray) -> np.ndarray:
    big = np.finfo(np.float64).max
    return np.nan_to_num(np.asarray(a, dtype=np.float64), posinf=big, neginf=-big)


def _point_at(curve: dict | None, threshold: float) -> dict | None:
    """The stored curve's point that ``threshold`` realises (the next stored one at or above)."""
    if not curve:
        return None
    thr = np.asarray(curve["threshold"], dtype=np.float64)
    i = min(int(np.searchsorted(thr, threshold, side="left")), len(thr) - 1)
    acc = curve.get("accuracy")
    return {
        "threshold": json_safe(float(threshold)),
        "teacher_fraction": curve["teacher_fraction"][i],
        "accuracy": None if acc is None else acc[i],
        "agreement": curve["agreement"][i],
        "cost": curve["cost"][i],
    }


def _threshold_for_share(bundle: Any, share: float) -> float:
    """The largest stored threshold whose calibration teacher share is at most ``share``."""
    curve = bundle.extra.get("curve")
    if not curve:
        raise InputError(
            "this bundle stores no trade-off curve, so a teacher share cannot be "
            "turned into a threshold; set 'threshold' directly"
        )
    frac = np.asarray(curve["teacher_fraction"], dtype=np.float64)
    ok = np.flatnonzero(frac <= share + 1e-12)
    return float(curve["threshold"][int(ok[-1])]) if ok.size else float(curve["threshold"][0])
