"""The Open Inference Protocol v2 routes (KServe / Triton REST) and ``predict``.

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``POST /v2/repository/index``,
``GET /v2/models/stats``, and per model (each also under ``/versions/1``):
metadata, ``/ready``, ``/config``, ``/stats``, ``POST .../infer``; and
``POST /v2/models/{name}/predict`` (``{"instances": [...]}`` in, JSON out).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from ebjr._version import __version__
from ebjr.bundle import json_safe
from ebjr.exceptions import InputError, ModelError, Overloaded, TeacherUnavailable
from ebjr.serve.edge import request_id_of
from ebjr.serve.engine import Engine, JointAnswer, is_joint
from ebjr.serve.protocol import (
    InferRequest,
    InferResponse,
    ModelConfig,
    ModelMetadata,
    PredictRequest,
    RepositoryIndexRequest,
    ServerMetadata,
    binary_inputs,
    check_finite,
    check_shape,
    decode_tensor,
    encode_response,
    infer_request_fast,
    split_body,
)
from ebjr.serve.routes import ERRORS, json_body, model_route
from ebjr.serve.state import VERSION, AppState, Serving, State, app_state, check_model
from ebjr.serve.triton import model_config, model_statistics

__all__ = ["EXTENSIONS", "INPUT_NAME", "router"]

log = logging.getLogger("ebjr.serve")

#: the one input tensor's name
INPUT_NAME = "input"
#: protocol extensions this server implements (``GET /v2``)
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics",
              "parameters", "ebjr_threshold"]
#: the output tensors of a joint engine after its task's answer (``task.output_specs()``),
#: and of one model served alone; the infer route returns them in this order
ROUTING_OUTPUTS = [
    {"name": "scores", "datatype": "FP64", "shape": [-1]},
    {"name": "answered_by", "datatype": "BYTES", "shape": [-1]},
]
MODEL_OUTPUTS = [{"name": "logits", "datatype": "FP32", "shape": [-1, -1]}]

router = APIRouter()


# ---------------------------------------------------------------- server
@router.get("/v2", response_model=ServerMetadata)
async def server_metadata() -> dict:
    return {"name": "ebjr", "version": __version__, "extensions": EXTENSIONS}


@router.get("/v2/health/live")
async def live() -> dict:
    return {"live": True}


def _check_ready(state: AppState) -> None:
    if not state.ready:
        raise HTTPException(503, "not ready", {"Retry-After": "1"})


@router.get("/v2/health/ready", responses=ERRORS)
async def ready(state: State) -> dict:
    _check_ready(state)
    return {"ready": True}


@router.post("/v2/repository/index", responses=ERRORS,
             openapi_extra=json_body(RepositoryIndexRequest, required=False))
async def repository_index(request: Request) -> list[dict]:
    """Triton's model repository extension: the one model this server serves."""
    state = app_state(request)
    raw = await state.bodies.read(request)
    only_ready = (await state.bodies.parse(raw, RepositoryIndexRequest)).ready \
        if raw.strip() else None
    entry = {"name": state.settings.name, "version": VERSION,
             "state": "READY" if state.ready else "LOADING"}
    if not state.ready:
        entry["reason"] = "the models are still loading"
    return [] if only_ready and not state.ready else [entry]


def _statistics(state: AppState) -> dict:
    batches = state.engine.front.stats if state.engine is not None else None
    return model_statistics(state.settings.name, VERSION, state.stats, batches)


@router.get("/v2/models/stats")
async def all_stats(state: State) -> dict:
    """Triton's statistics extension for every model (this server has one)."""
    return {"model_stats": [_statistics(state)]}


# ---------------------------------------------------------------- one model
def _platform(engine: Engine) -> str:
    if engine.kind == "cascade":
        return "ebjr_cascade"
    return "ebjr_joint" if is_joint(engine) else "ebjr_model"


def _outputs(engine: Engine) -> list[dict[str, Any]]:
    if is_joint(engine):
        return engine.task.output_specs() + ROUTING_OUTPUTS
    return MODEL_OUTPUTS


def _inputs(state: AppState) -> list[dict[str, Any]]:
    return [{"name": INPUT_NAME, "datatype": state.input_datatype,
             "shape": [-1, *(state.row_shape or [-1])]}]


async def metadata(request: Request, name: str, engine: Serving) -> dict:
    state = app_state(request)
    s = state.settings
    params: dict[str, Any] = {"role": s.role, "task": state.bundle.make_task().to_spec()}
    if is_joint(engine):
        params.update(router=engine.router.to_spec(),
                      threshold=json_safe(await engine.threshold()),
                      costs=state.bundle.costs, target=state.bundle.target,
                      calibration=json_safe(state.bundle.calibration), fallback=s.fallback)
        if s.remote_teacher:
            params["remote_teacher"] = s.remote_teacher
        if engine.kind == "cascade":
            params["stages"] = list(state.bundle.cascade.stages)
            params["combine"] = state.bundle.cascade.combine
    return {"name": name, "versions": [VERSION], "platform": _platform(engine),
            "inputs": _inputs(state), "outputs": _outputs(engine), "parameters": params}


async def model_ready(request: Request, name: str) -> dict:
    state = app_state(request)
    check_model(state, name, request.path_params.get("version"))
    _check_ready(state)
    return {"name": name, "ready": True}


async def config(request: Request, name: str, engine: Serving) -> dict:
    state = app_state(request)
    s = state.settings
    return model_config(name, VERSION, _platform(engine), _inputs(state), _outputs(engine),
                        s.max_request_rows, s.max_batch_size, s.max_wait_ms)


async def stats(request: Request, name: str) -> dict:
    state = app_state(request)
    check_model(state, name, request.path_params.get("version"))
    return {"model_stats": [_statistics(state)]}


# ---------------------------------------------------------------- inference
async def run_inference(state: AppState, engine: Engine, x: np.ndarray
                        ) -> tuple[np.ndarray | JointAnswer, float]:
    """``engine`` on ``x`` within the request timeout; the outcome counted (Triton's
    statistics, the latency and rows metrics, what was shed and why)."""
    s, metrics = state.settings, state.metrics
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(s.request_timeout_s):  # no task of its own, as wait_for's
            result = await engine.infer(x)
    except Exception as exc:
        state.stats.fail[0] += 1
        state.stats.fail[1] += int(1e9 * (time.perf_counter() - t0))
        _count_failure(state, exc)
        if isinstance(exc, TimeoutError):
            raise HTTPException(503, f"no answer within {s.request_timeout_s} s; retry later",
                                {"Retry-After": "1"}) from None
        raise
    elapsed = time.perf_counter() - t0
    st = state.stats
    st.success[0] += 1
    st.success[1] += int(1e9 * elapsed)
    st.inference_count += len(x)
    st.last_inference_ms = int(time.time() * 1000)
    if isinstance(result, JointAnswer):
        metrics.latency.labels(result.path).observe(elapsed)
        for who, c in result.counts().items():
            metrics.rows.labels(who).inc(c)
    else:
        metrics.latency.labels(s.role).observe(elapsed)
        metrics.rows.labels(s.role).inc(len(x))
    return result, elapsed


def _count_failure(state: AppState, exc: Exception) -> None:
    shed = state.metrics.shed
    if isinstance(exc, Overloaded):
        shed.labels("shutting_down" if exc.closing else "queue_full").inc()
    elif isinstance(exc, TeacherUnavailable):
        shed.labels("teacher_unavailable").inc()
    elif isinstance(exc, TimeoutError):
        shed.labels("timeout").inc()
    elif isinstance(exc, ModelError) and state.row_shape is None:
        log.warning("this server does not know the model's input shape: start it with "
                    "--input-shape, or save the bundle with an input record, to have "
                    "wrongly shaped inputs refused with 400")


def _finite(a: np.ndarray) -> np.ndarray:
    big = np.finfo(np.float64).max
    return np.nan_to_num(np.asarray(a, dtype=np.float64), posinf=big, neginf=-big)


def _tensors(engine: Engine, result: np.ndarray | JointAnswer
             ) -> tuple[list[tuple[str, np.ndarray]], dict[str, Any]]:
    """The output tensors of ``result`` and the response's parameters."""
    if not isinstance(result, JointAnswer):
        return [("logits", result.astype(np.float32))], {}
    assert is_joint(engine)
    tensors = [
        *engine.task.tensors(result),
        ("scores", _finite(result.scores)),
        ("answered_by", result.answered_by.astype(str)),
    ]
    router_name = engine.router.name
    moved = "passed_on" if engine.kind == "cascade" else "teacher_rows"
    return tensors, {
        "threshold": json_safe(result.threshold),
        "degraded": result.degraded,
        "router": router_name,
        moved: result.passed_on,
    }


async def _decode(state: AppState, request: Request, name: str
                  ) -> tuple[InferRequest, np.ndarray]:
    """The request's JSON header and its one input tensor, checked against the model."""
    header, rest = split_body(await state.bodies.read(request),
                              request.headers.get("inference-header-content-length"))
    body: InferRequest = await state.bodies.parse(header, InferRequest, infer_request_fast)
    if len(body.inputs) != 1:
        raise InputError(f"this model takes one input, {INPUT_NAME!r}; got {len(body.inputs)}: "
                         f"{[t.name for t in body.inputs]}")
    blobs = binary_inputs(body, rest)
    t = body.inputs[0]
    if t.name != INPUT_NAME:
        raise InputError(f"unknown input {t.name!r}; this model's input is {INPUT_NAME!r} "
                         f"(see GET /v2/models/{name})")
    if t.datatype != state.input_datatype:
        raise InputError(f"input {t.name!r}: datatype {t.datatype!r} does not match the "
                         f"model's {state.input_datatype!r} (see GET /v2/models/{name})")
    x = decode_tensor(t, state.row_shape, state.settings.max_request_rows, blobs[0])
    return body, x


async def infer(request: Request, name: str, engine: Serving) -> Response:
    state = app_state(request)
    st = state.stats
    t0 = time.perf_counter()
    body, x = await _decode(state, request, name)
    st.decode_ns[0] += 1
    st.decode_ns[1] += int(1e9 * (time.perf_counter() - t0))
    result, _ = await run_inference(state, engine, x)
    if state.feedback is not None:  # labels may come later, by the request's id
        state.feedback.put(body.id or request_id_of(request.scope), result)
    t1 = time.perf_counter()
    tensors, params = _tensors(engine, result)
    content, headers = encode_response(name, VERSION, body, tensors, params)
    st.encode_ns[0] += 1
    st.encode_ns[1] += int(1e9 * (time.perf_counter() - t1))
    return Response(content, headers=headers)


@router.post("/v2/models/{name}/predict", responses=ERRORS,
             openapi_extra=json_body(PredictRequest))
async def predict(request: Request, name: str, engine: Serving) -> dict:
    state = app_state(request)
    body: PredictRequest = await state.bodies.parse(await state.bodies.read(request),
                                                    PredictRequest)
    try:
        x = np.asarray(body.instances, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"instances must be equally shaped lists of numbers: {exc}") from None
    check_shape("instances", x.shape, state.row_shape, state.settings.max_request_rows)
    check_finite("instances", x)
    result, elapsed = await run_inference(state, engine, x.astype(np.float32))
    if state.feedback is not None:
        state.feedback.put(request_id_of(request.scope), result)
    if not isinstance(result, JointAnswer):
        return {"logits": result.tolist(), "latency_ms": 1e3 * elapsed}
    assert is_joint(engine)
    return {
        **engine.task.json_answer(result),
        "scores": _finite(result.scores).tolist(),
        "answered_by": result.answered_by.tolist(),
        "threshold": json_safe(result.threshold),
        "degraded": result.degraded,
        "latency_ms": 1e3 * elapsed,
    }


# the model routes, each also under /versions/{version}; after /v2/models/stats
model_route(router, "GET", "", metadata, response_model=ModelMetadata, responses=ERRORS,
            response_model_exclude_none=True)
model_route(router, "GET", "/ready", model_ready, responses=ERRORS)
model_route(router, "GET", "/config", config, response_model=ModelConfig, responses=ERRORS,
            response_model_exclude_none=True)
model_route(router, "GET", "/stats", stats, responses=ERRORS)
model_route(router, "POST", "/infer", infer, response_model=InferResponse, responses=ERRORS,
            openapi_extra=json_body(InferRequest))
# the route nearly every request takes is matched first (routes are tried in order, each
# by its pattern); no other route's pattern matches its paths, so the order changes nothing
# else
router.routes.sort(key=lambda r: not getattr(r, "path", "").endswith("/infer"))
