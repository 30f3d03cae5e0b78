"""Routing: the router contract and registry (``base``) and the built-in routers.

Every name of the former ``ebjr.routers`` module is here.
"""

from ebjr.routing.base import (
    Router,
    check_threshold,
    get_router,
    list_routers,
    register_lazy,
    register_router,
    router_from_spec,
    teacher_mask,
)
from ebjr.routing.routers import (
    EnergyRouter,
    EntropyRouter,
    MarginRouter,
    MaxLogitRouter,
    PaperCodeRouter,
    RandomRouter,
    SoftmaxRouter,
    SpecializedRouter,
)

__all__ = [
    "EnergyRouter",
    "EntropyRouter",
    "MarginRouter",
    "MaxLogitRouter",
    "PaperCodeRouter",
    "RandomRouter",
    "Router",
    "SoftmaxRouter",
    "SpecializedRouter",
    "check_threshold",
    "get_router",
    "list_routers",
    "register_lazy",
    "register_router",
    "router_from_spec",
    "teacher_mask",
]
