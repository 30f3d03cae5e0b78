"""The live knob of a joint model: its threshold, the trade-off curve and the routing stats.

``GET|PUT /v2/models/{name}/threshold`` (writes need ``Authorization: Bearer <admin
token>``; a write gives a threshold, or a teacher fraction turned into one on the
bundle's curve; for a cascade, ``thresholds``, one per stage but the last),
``GET /v2/models/{name}/curve`` (not for a cascade: 404),
``GET /v2/models/{name}/routing_stats``, ``GET /v2/models/{name}/guarantee`` (the live
guarantee monitor of ``--shadow-rate``; 404 without one) and ``POST
/v2/models/{name}/feedback`` (labels of an answered request, by its id; admin token).
A plain model has none of them (404).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, Request
from starlette.exceptions import HTTPException

from ebjr.bundle import curve_point_at, json_safe
from ebjr.exceptions import InputError
from ebjr.serve.engine import JointEngineAPI
from ebjr.serve.feedback import NotWaiting
from ebjr.serve.protocol import FeedbackRequest, ThresholdUpdate
from ebjr.serve.routes import ERRORS, json_body
from ebjr.serve.state import AppState, Joint, State, app_state

__all__ = ["bearer_matches", "router", "threshold_for_fraction"]

log = logging.getLogger("ebjr.serve")

router = APIRouter()


async def _threshold_state(state: AppState, engine: JointEngineAPI) -> dict[str, Any]:
    info = await engine.threshold_info()
    return {
        "threshold": json_safe(info["threshold"]),
        "effective_threshold": json_safe(info["effective_threshold"]),
        "calibrated_threshold": json_safe(state.bundle.threshold),
        "router": engine.router.name,
        "load_control": json_safe(info["load_control"]),
        "writable": state.settings.admin_token is not None,
        **({"stages": info["stages"]} if "stages" in info else {}),
    }


@router.get("/v2/models/{name}/threshold", responses=ERRORS)
async def get_threshold(state: State,
                        engine: Joint) -> dict:
    return await _threshold_state(state, engine)


def _check_writer(token: str | None, authorization: str | None,
                  what: tuple[str, str] = ("threshold writes", "change the threshold")
                  ) -> None:
    """403 without an admin token, 401 without its bearer (``what``: the writes refused,
    and what the token is required for)."""
    if token is None:
        raise HTTPException(403, f"{what[0]} are disabled: start the server with "
                                 "--admin-token (or EBJR_ADMIN_TOKEN) to allow them")
    if not bearer_matches(authorization, token):
        raise HTTPException(401, "a valid 'Authorization: Bearer <admin token>' header is "
                                 f"required to {what[1]}", {"WWW-Authenticate": "Bearer"})


def _new_threshold(state: AppState, body: ThresholdUpdate, engine: JointEngineAPI) -> Any:
    if engine.kind == "cascade":
        n = len(state.bundle.cascade.stages) - 1
        if body.thresholds is None or body.threshold is not None or body.teacher_fraction:
            raise InputError(f"a cascade takes 'thresholds': a list of {n} numbers, one per "
                             "stage but the last")
        bad = [t for t in body.thresholds if not math.isfinite(t)]
        if bad:
            raise InputError(f"thresholds must be finite numbers, got {bad}")
        return list(body.thresholds)
    if body.thresholds is not None:
        raise InputError("'thresholds' (a list) is for a cascade; this model has one "
                         "'threshold'")
    if body.threshold is not None and body.teacher_fraction is None:
        if not math.isfinite(body.threshold):
            raise InputError(f"threshold must be a finite number, got {body.threshold!r}")
        return body.threshold
    if body.teacher_fraction is not None and body.threshold is None:
        return threshold_for_fraction(state.bundle.curve, body.teacher_fraction)
    raise InputError("give exactly one of 'threshold' or 'teacher_fraction'")


@router.put("/v2/models/{name}/threshold", responses=ERRORS,
            openapi_extra=json_body(ThresholdUpdate))
async def set_threshold(
    request: Request,
    name: str,
    engine: Joint,
    authorization: Annotated[str | None, Header()] = None,
) -> dict:
    state = app_state(request)
    _check_writer(state.settings.admin_token, authorization)
    body: ThresholdUpdate = await state.bodies.parse(await state.bodies.read(request),
                                                     ThresholdUpdate)
    new = _new_threshold(state, body, engine)
    old = await engine.set_threshold(new)
    client = request.client.host if request.client else "?"
    log.warning("threshold of %r changed from %r to %r by %s (%s)", name, old, new, client,
                json.dumps(body.model_dump(exclude_none=True)))
    return {"old_threshold": json_safe(old), **(await _threshold_state(state, engine))}


@router.get("/v2/models/{name}/curve", responses=ERRORS)
async def curve(state: State,
                engine: Joint) -> dict:
    if engine.kind == "cascade":
        raise HTTPException(404, "a cascade has no single trade-off curve: its frontier is in "
                                 "the report of 'ebjr cascade --report DIR'")
    c = state.bundle.curve
    return {
        "curve": c,
        "costs": state.bundle.costs,
        "calibrated_threshold": json_safe(state.bundle.threshold),
        "operating_point": curve_point_at(c, await engine.threshold()),
    }


@router.get("/v2/models/{name}/guarantee", responses=ERRORS)
async def guarantee(engine: Joint) -> dict:
    shadow = getattr(engine, "shadow", None)
    if shadow is None:
        raise HTTPException(404, "no guarantee monitor: start the server with --shadow-rate "
                                 "P (and --guarantee-eps, unless the bundle's target is a "
                                 "guaranteed drop)")
    return json_safe(await shadow.state())


@router.post("/v2/models/{name}/feedback", responses=ERRORS,
             openapi_extra=json_body(FeedbackRequest))
async def feedback(
    request: Request,
    name: str,
    engine: Joint,
    authorization: Annotated[str | None, Header()] = None,
) -> dict:
    state = app_state(request)
    shadow = getattr(engine, "shadow", None)
    if shadow is None or state.feedback is None:
        raise HTTPException(404, "no labelled feedback here: it needs the guarantee monitor "
                                 "(--shadow-rate)")
    # feedback changes what the monitor believes, and what its policy does
    _check_writer(state.settings.admin_token, authorization, ("feedback writes",
                                                              "send feedback"))
    body: FeedbackRequest = await state.bodies.parse(await state.bodies.read(request),
                                                     FeedbackRequest)
    try:
        await state.feedback.label(body.id, body.labels)
    except NotWaiting as exc:
        raise HTTPException(404, str(exc)) from None
    return json_safe(await shadow.state())


@router.get("/v2/models/{name}/routing_stats", responses=ERRORS)
async def routing_stats(state: State,
                        engine: Joint) -> dict:
    return {
        "counts": await engine.counts(),
        "recent_teacher_fraction": state.metrics.recent_teacher_fraction(),
        "queue_rows": await engine.queue_rows(),
        "operating_point": None if engine.kind == "cascade"
        else curve_point_at(state.bundle.curve, await engine.threshold()),
        **(await _threshold_state(state, engine)),
    }


def bearer_matches(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time (as SHA-256 digests)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    a = hashlib.sha256(given.strip().encode()).digest()
    b = hashlib.sha256(token.encode()).digest()
    return secrets.compare_digest(a, b)


def threshold_for_fraction(curve: dict[str, Any] | None, fraction: float) -> float:
    """The largest stored threshold whose calibration teacher fraction is at most
    ``fraction``."""
    if not curve:
        raise InputError(
            "this bundle stores no trade-off curve, so a teacher fraction cannot be "
            "turned into a threshold; set 'threshold' directly"
        )
    frac = np.asarray(curve["teacher_fraction"], dtype=np.float64)
    ok = np.flatnonzero(frac <= fraction + 1e-12)
    return float(curve["threshold"][int(ok[-1])]) if ok.size else float(curve["threshold"][0])
