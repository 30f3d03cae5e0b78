"""What the routes share: the app's state, and the lookups every route starts with.

One :class:`AppState` per app (``app.state.ebjr``). Routes take what they need
as FastAPI dependencies: :func:`app_state`, :func:`serving` (the engine, or a
503 while loading or draining), :func:`joint_engine` (404 for a plain model),
and :func:`check_model` for the name and version in the path. The dependencies
are coroutines: FastAPI runs a plain function dependency on a worker thread, a
thread hop per request for a lookup of a few microseconds.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from ebjr.serve.bodies import BodyReader
from ebjr.serve.engine import Engine, JointEngineAPI, is_joint
from ebjr.serve.metrics import ServeMetrics
from ebjr.serve.protocol import NUMERIC_DATATYPES
from ebjr.serve.settings import ServeSettings
from ebjr.serve.triton import TritonStats

__all__ = ["VERSION", "AppState", "Joint", "Serving", "State", "app_state", "check_model",
           "joint_engine", "serving"]

#: the model version every route answers to
VERSION = "1"


class AppState:
    """The app's settings, metrics, engine and bundle, its body rules and request counts."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServeMetrics()
        self.engine: Engine | None = None
        self.bundle: Any = None
        self.ready = False
        self.draining = False
        self.row_shape: tuple[int, ...] | None = settings.input_shape
        self.input_datatype = "FP32"
        self.accepted = 0  # inference requests that reached the app...
        self.answered = 0  # ...and those that got their response
        self.stats = TritonStats()
        self.bodies = BodyReader(settings.max_body_bytes, settings.max_json_bytes,
                                 settings.max_json_elements, settings.max_concurrent_parses)
        self.stopping: Any = lambda: False  # set by ebjr.serve.serve: uvicorn is shutting down
        self.feedback: Any = None  # a FeedbackStore once a guarantee monitor runs here

    def read_input_record(self) -> None:
        """The input's row shape and datatype from the bundle's input record, if it has one."""
        spec = self.bundle.input or {}
        if self.row_shape is None and isinstance(spec.get("shape"), list):
            self.row_shape = tuple(int(d) for d in spec["shape"])
        if spec.get("datatype") in NUMERIC_DATATYPES:
            self.input_datatype = spec["datatype"]

    def engine_or_503(self) -> Engine:
        """The engine, or 503 with Retry-After while the models load or the server drains."""
        if self.draining:
            raise HTTPException(503, "the server is shutting down", {"Retry-After": "1"})
        if not self.ready or self.engine is None:
            raise HTTPException(503, "the models are still loading", {"Retry-After": "1"})
        return self.engine


def app_state(request: Request) -> AppState:
    """The app's :class:`AppState` (a dependency)."""
    return request.app.state.ebjr


def check_model(state: AppState, name: str, version: str | None = None) -> None:
    """404 unless ``name`` (and ``version``, if given) is the served model's."""
    served = state.settings.name
    if name != served:
        raise HTTPException(404, f"unknown model {name!r}; this server serves {served!r}")
    if version is not None and version != VERSION:
        raise HTTPException(
            404, f"unknown version {version!r} of model {name!r}; it has version {VERSION!r}"
        )


async def _app_state(request: Request) -> AppState:
    return app_state(request)


async def serving(request: Request, name: str) -> Engine:
    """The engine of model ``name`` (a dependency of every model route)."""
    state = app_state(request)
    check_model(state, name, request.path_params.get("version"))
    return state.engine_or_503()


async def joint_engine(request: Request, name: str) -> JointEngineAPI:
    """The joint engine of model ``name``; 404 if it serves one plain model."""
    engine = await serving(request, name)
    if not is_joint(engine):
        raise HTTPException(
            404,
            f"model {name!r} is a plain {app_state(request).settings.role} model; "
            "it has no threshold, curve or routing stats",
        )
    return engine


#: route parameters: ``state: State``, ``engine: Serving`` or ``engine: Joint``
State = Annotated[AppState, Depends(_app_state)]
Serving = Annotated[Engine, Depends(serving)]
Joint = Annotated[JointEngineAPI, Depends(joint_engine)]
