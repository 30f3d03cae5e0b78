"""Which cluster ebjr's commands join, and Ray's token for joining one (no Ray import: it
must run before Ray's).

Ray 2.60 turns token authentication on for a cluster once a token exists, and its
clients send the token only when ``RAY_AUTH_MODE=token`` is set *before* Ray is
imported (the setting is read once); otherwise every call fails with
``InvalidAuthToken``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["cluster_address", "token_path", "use_cluster_token"]

log = logging.getLogger("ebjr.ray")


def cluster_address(address: str | None) -> str | None:
    """The address ``ray.init`` gets for ``--ray-address`` (``None``: not given): that
    cluster; else ``$RAY_ADDRESS``'s (``None``: Ray reads it); else ``"local"``, a new local
    cluster. A plain ``ray.init()`` would instead join the last cluster ``ray start``
    recorded, and hang on a stale record a killed cluster left."""
    if address:
        return address
    return None if os.environ.get("RAY_ADDRESS") else "local"


def token_path() -> Path:
    """Where Ray reads its token from: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def use_cluster_token() -> bool:
    """Set ``RAY_AUTH_MODE=token`` when a token is at hand (``RAY_AUTH_TOKEN``, or the token
    file) and the environment does not choose a mode; whether the token will be sent."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode:
        return mode == "token"
    if os.environ.get("RAY_AUTH_TOKEN") or token_path().is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        log.info("joining the cluster with Ray's token (%s)",
                 "RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else token_path())
        return True
    return False
