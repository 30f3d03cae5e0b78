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
    """Load the models of ``settings``, then run the service under uvicorn until SIGINT or
    SIGTERM.

    The models load before the server listens, so a bundle that cannot load stops
    here with its :class:`~ebjr.exceptions.BundleError` (``ebjr serve``: one line, exit
    status 2) instead of inside the server's startup. A signal drains the server: no
    new connections, queued requests are answered, stalled uploads get 503, and the call
    returns (exit status 0).
    """
    import logging

    import uvicorn

    from ebjr.serve.app import create_app, install, load_models
    from ebjr.serve.http import Server, header_timeout_protocol

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    models = load_models(settings)
    app = create_app(settings, load=lambda state: install(state, models))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=header_timeout_protocol(settings.header_timeout_s, settings.max_header_bytes),
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=max(5, int(settings.request_timeout_s) + 1),
    )
    server = Server(config)
    app.state.ebjr.stopping = lambda: server.should_exit
    server.run()
