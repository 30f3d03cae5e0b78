"""ServeSettings (pydantic-settings): one field per setting makes its flag, its environment
variable and its check; the command line, the environment and Python agree."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

pytest.importorskip("pydantic_settings")

from ebjr.cli import main
from ebjr.exceptions import InputError
from ebjr.serve.settings import (
    FLAG_ALIASES,
    ServeSettings,
    add_settings_arguments,
    settings_from_arguments,
)

#: a value other than the default for every setting, as typed on a command line
ON_THE_COMMAND_LINE = {
    "role": ("student", "student"),
    "model_name": ("m", "m"),
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": ("9001", 9001),
    "admin_token": ("secret", "secret"),
    "max_batch_size": ("8", 8),
    "max_wait_ms": ("0.5", 0.5),
    "teacher_max_batch_size": ("9", 9),
    "teacher_max_wait_ms": ("1.5", 1.5),
    "max_queue_rows": ("2000", 2000),
    "teacher_max_queue_rows": ("101", 101),
    "max_request_rows": ("50", 50),
    "max_body_bytes": ("1000", 1000),
    "request_timeout_s": ("3", 3.0),
    "header_timeout_s": ("4", 4.0),
    "body_timeout_s": ("5", 5.0),
    "remote_teacher": ("http://h:1/v2/models/t", "http://h:1/v2/models/t"),
    "teacher_timeout_s": ("6", 6.0),
    "teacher_retries": ("0", 0),
    "teacher_input_name": ("pixels", "pixels"),
    "teacher_output_name": ("logits", "logits"),
    "fallback": ("error", "error"),
    "load_mode": ("queue", "queue"),
    "load_budget": ("12", 12.0),
    "load_min_threshold": ("-3", -3.0),
    "shadow_rate": ("0.05", 0.05),
    "shadow_near_rate": ("0.3", 0.3),
    "shadow_near_share": ("0.2", 0.2),
    "guarantee_eps": ("0.01", 0.01),
    "guarantee_delta": ("0.1", 0.1),
    "on_alarm": ("tighten", "tighten"),
    "input_shape": ("3,32,32", (3, 32, 32)),
    "torch_threads": ("1", 1),
    "allow_factories": ("mypkg:net", ["mypkg:net"]),
    "allow_torchscript": (None, True),  # a flag without a value
    "admin_token_file": (__file__, Path(__file__)),
    "max_json_bytes": ("1000", 1000),
    "max_json_elements": ("100", 100),
    "max_concurrent_parses": ("3", 3),
    "max_header_bytes": ("2048", 2048),
    "max_connections": ("10", 10),
    "allowed_origins": ("https://app.example.com", ["https://app.example.com"]),
    "allowed_hosts": ("api.example.com", ["api.example.com"]),
    "log_level": ("debug", "debug"),
    "share_model_thread": ("false", False),
    "reuse_freed_memory": (None, True),  # the default; --no-reuse-freed-memory below
}


def parse(argv):
    parser = argparse.ArgumentParser()
    source = add_settings_arguments(parser)
    return settings_from_arguments(source, parser.parse_args(argv))


def test_flags_that_turn_a_default_off_or_back_to_automatic():
    assert parse(["b.json", "--no-reuse-freed-memory"]).reuse_freed_memory is False
    assert parse(["b.json", "--share-model-thread", "true"]).share_model_thread is True
    assert parse(["b.json", "--share-model-thread", "none"]).share_model_thread is None
    assert parse(["b.json"]).share_model_thread is None


def test_every_setting_has_a_flag():
    assert set(ON_THE_COMMAND_LINE) | {"bundle"} == set(ServeSettings.model_fields)
    for name, (typed, value) in ON_THE_COMMAND_LINE.items():
        argv = ["b.json", f"--{name.replace('_', '-')}", *([] if typed is None else [typed])]
        if name in ("remote_teacher", "shadow_rate") or name.startswith("load_"):  # joint
            argv += ["--role", "joint"]
        if name == "shadow_near_rate":  # needs a shadow rate away from the threshold
            argv += ["--shadow-rate", "0.05"]
        if name == "admin_token_file":  # the token comes from one place only
            argv += ["--admin-token", "none"]
        if name in ("load_mode", "load_budget", "load_min_threshold"):
            argv += ["--load-mode", "queue", "--load-budget", "12"]
            argv += [f"--{name.replace('_', '-')}", typed]
        s = parse(argv)
        assert getattr(s, name) == value, name
        assert s.bundle == "b.json"


def test_the_old_flag_names_still_work():
    s = parse(["b.json", "--request-timeout", "3", "--header-timeout", "4", "--body-timeout",
               "5", "--teacher-timeout", "6", "--allow-factory", "a:f", "--allow-factory", "b:g"])
    assert (s.request_timeout_s, s.header_timeout_s, s.body_timeout_s, s.teacher_timeout_s) == (
        3.0, 4.0, 5.0, 6.0)
    assert s.allow_factories == ["a:f", "b:g"]
    assert set(FLAG_ALIASES) <= {n.replace("_", "-") for n in ServeSettings.model_fields}


def test_flags_beat_the_environment_which_beats_the_defaults(monkeypatch):
    monkeypatch.setenv("EBJR_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("EBJR_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("EBJR_INPUT_SHAPE", "[1, 28, 28]")
    s = ServeSettings(bundle="b.json")
    assert (s.max_batch_size, s.admin_token, s.input_shape) == (16, "from-env", (1, 28, 28))
    assert parse(["b.json", "--max-batch-size", "4"]).max_batch_size == 4
    assert parse(["b.json"]).max_batch_size == 16
    monkeypatch.setenv("EBJR_ADMIN_TOKEN", "")  # empty: as if unset
    assert ServeSettings(bundle="b.json").admin_token is None


def test_the_token_is_not_in_the_repr():
    assert "secret" not in repr(ServeSettings(bundle="b.json", admin_token="secret"))


@pytest.mark.parametrize(("values", "message"), [
    ({"max_batch_size": 0}, "max_batch_size: Input should be greater than 0, got 0"),
    ({"max_batch_size": True}, "max_batch_size: expected an integer, got True"),
    ({"port": "http"}, "port: Input should be a valid integer"),
    ({"role": "both"}, "role: Input should be 'joint', 'student' or 'teacher', got 'both'"),
    ({"colour": "red"}, "colour: unknown setting; the settings are bundle, role"),
    ({"teacher_retries": -1}, "teacher_retries: Input should be greater than or equal to 0"),
    ({"request_timeout_s": 0}, "request_timeout_s: Input should be greater than 0"),
    ({"load_mode": "queue", "load_budget": 0.5}, "load_budget for mode 'queue' is rows >= 1"),
    ({"role": "teacher", "load_mode": "share", "load_budget": 0.1}, "needs role 'joint'"),
    ({"role": "student", "remote_teacher": "http://h/v2/models/t"}, "needs role 'joint'"),
    ({"input_shape": [3, "x"]}, "input_shape.1: Input should be a valid integer"),
    ({"share_model_thread": "maybe"}, "share_model_thread: Input should be a valid boolean"),
    ({"reuse_freed_memory": "sometimes"}, "reuse_freed_memory: Input should be a valid boolean"),
])
def test_bad_settings_are_named(values, message):
    with pytest.raises(InputError) as e:
        ServeSettings(bundle="b.json", **values)
    assert message in str(e.value)


def test_a_bad_flag_value_exits_2_naming_the_setting(tmp_path, capsys):
    bundle = tmp_path / "b.json"
    bundle.write_text("{}")
    assert main(["serve", str(bundle), "--max-batch-size", "0"]) == 2
    assert "max_batch_size: Input should be greater than 0, got '0'" in capsys.readouterr().err


def test_the_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for name in ON_THE_COMMAND_LINE:
        assert f"--{name.replace('_', '-')}" in out, name
    assert "(default: 64)" in out and "--ray" in out


def test_without_the_serve_extra_the_command_says_what_to_install(monkeypatch, capsys):
    import sys

    for name in [m for m in sys.modules if m.startswith("pydantic_settings")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "ebjr.serve.settings", raising=False)
    monkeypatch.setitem(sys.modules, "pydantic_settings", None)  # import fails
    assert main(["serve", "b.json", "--port", "9000"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'ebjr[serve]'" in err and "pydantic_settings" in err
