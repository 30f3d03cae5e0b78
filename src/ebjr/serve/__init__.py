"""The inference service: ``ebjr serve`` (FastAPI over the Open Inference Protocol v2).

Install with ``pip install 'ebjr[serve]'``. The app factory is
:func:`ebjr.serve.app.create_app`; :func:`serve` runs it under uvicorn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ebjr.serve.app import create_app

        return create_app
    if name == "ServeSettings":
        from ebjr.serve.settings import ServeSettings

        return ServeSettings
    raise AttributeError(f"module 'ebjr.serve' has no attribute {name!r}")


def serve(settings: Any) -> None:
    """Run the service for ``settings`` under uvicorn until interrupted (drains on SIGTERM)."""
    import logging

    import uvicorn

    from ebjr.serve.app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(5, int(settings.request_timeout_s) + 1),
    )
