"""Building the Ray Serve application: options by name, deployment options per role,
YAML config, and clear errors. No cluster is started (binding needs none)."""

import asyncio

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="pip install 'ebjr[ray]'")

from ray.serve import Application

from ebjr.exceptions import BundleError, InputError
from ebjr.ray.serve import AppArgs, app, build_app, deployment_options
from ebjr.serve.settings import ServeSettings
from serve_support import make_serve_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(make_serve_bundle(tmp_path_factory.mktemp("ray_options")))


def test_defaults_give_every_role_its_own_options():
    opts = deployment_options(ServeSettings(bundle="b.json", max_batch_size=32,
                                            max_queue_rows=1000, max_request_rows=256),
                              first_stage_in_ingress=False)
    assert opts["ingress"]["ray_actor_options"] == {"num_cpus": 0}
    assert opts["student"]["ray_actor_options"] == {"num_cpus": 1}
    assert opts["student"]["max_queued_requests"] == 32  # ceil(1000 / 32) chunks
    assert opts["teacher"]["ray_actor_options"] == {"num_cpus": 1}


def test_sections_then_replicas_override_and_autoscaling_decides_the_count():
    s = ServeSettings(bundle="b.json")
    auto = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}
    opts = deployment_options(
        s,
        {"student": {"num_replicas": 3, "ray_actor_options": {"num_cpus": 2}},
         "teacher": {"autoscaling_config": auto, "num_replicas": 2}},
        {"student": "2", "ingress": 4},
        first_stage_in_ingress=False,
    )
    assert opts["student"]["num_replicas"] == 2
    assert opts["student"]["ray_actor_options"] == {"num_cpus": 2}
    assert opts["ingress"]["num_replicas"] == 4
    assert opts["teacher"]["autoscaling_config"] == auto
    assert "num_replicas" not in opts["teacher"]


def test_with_the_student_in_the_ingress_its_options_configure_the_ingress():
    s = ServeSettings(bundle="b.json", max_batch_size=32, max_queue_rows=1000,
                      max_request_rows=256)
    assert set(deployment_options(s)) == {"ingress", "teacher"}  # the default layout
    opts = deployment_options(
        s, {"ingress": {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 64},
            "student": {"ray_actor_options": {"num_cpus": 2}}},
        {"ingress": 4, "student": 3})
    ingress = opts["ingress"]
    assert ingress["ray_actor_options"] == {"num_cpus": 2}  # the student's section last
    assert ingress["max_ongoing_requests"] == 64
    assert ingress["num_replicas"] == 3  # student replicas are ingress replicas
    assert ingress["max_queued_requests"] == 32  # the student's queue limit
    assert set(deployment_options(ServeSettings(bundle="b.json", role="teacher"))) == {
        "ingress"}  # one model alone: it runs in the ingress


def test_with_the_teacher_in_the_ingress_too_the_ingress_is_the_only_model_deployment(
        bundle):
    s = ServeSettings(bundle="b.json")
    opts = deployment_options(s, {"ingress": {"ray_actor_options": {"num_cpus": 2}}},
                              {"student": 2}, teacher_in_ingress=True)
    assert set(opts) == {"ingress"}
    assert opts["ingress"]["num_replicas"] == 2
    assert opts["ingress"]["ray_actor_options"] == {"num_cpus": 2}
    assert isinstance(build_app(bundle, teacher_in_ingress=True), Application)
    for kwargs, message in (
            ({"first_stage_in_ingress": False}, "needs the student there too"),
            ({"replicas": {"teacher": 2}}, "the teacher has no deployment of its own"),
            ({"sections": {"teacher": {"num_replicas": 2}}}, "no deployment of its own")):
        with pytest.raises(InputError, match=message):
            deployment_options(s, teacher_in_ingress=True, **kwargs)
    with pytest.raises(InputError, match="not to role 'teacher'"):
        deployment_options(ServeSettings(bundle="b.json", role="teacher"),
                           teacher_in_ingress=True)
    with pytest.raises(InputError, match="teacher_in_ingress must be true or false"):
        build_app(bundle, teacher_in_ingress="yes")


@pytest.mark.parametrize(("sections", "replicas", "message"), [
    ({"gpu": {}}, None, "unknown deployment 'gpu'"),
    ({"student": {"num_gpus": 1}}, None, "unknown option(s) ['num_gpus'] for the 'student'"),
    ({"student": [1]}, None, "must be a mapping"),
    (None, {"teacher": 0}, "teacher_replicas must be a positive integer or 'auto', got 0"),
    (None, {"student": "many"}, "student_replicas must be a positive integer or 'auto'"),
])
def test_bad_deployment_options_are_refused_by_name(sections, replicas, message):
    with pytest.raises(InputError) as e:
        deployment_options(ServeSettings(bundle="b.json"), sections, replicas)
    assert message in str(e.value)


def test_build_app_binds_an_application(bundle, tmp_path):
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text("student:\n  num_replicas: 2\nteacher:\n  ray_actor_options:\n"
                   "    num_cpus: 0.5\n")
    assert isinstance(build_app(bundle, config=str(cfg), fallback="error",
                                max_batch_size=16), Application)


@pytest.mark.parametrize(("options", "message"), [
    ({"port": 9000}, "['port'] belong to the single-process 'ebjr serve'"),
    ({"colour": "red"}, "unknown option(s) ['colour']"),
    ({"fallback": "maybe"}, "fallback"),
    ({"load_mode": "share"}, "load_budget"),
])
def test_build_app_refuses_bad_options(bundle, options, message):
    with pytest.raises(InputError) as e:
        build_app(bundle, **options)
    assert message in str(e.value)


def test_build_app_refuses_bad_configs_and_bundles(bundle, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("studnet: {}\n")
    with pytest.raises(InputError, match="sections among"):
        build_app(bundle, config=str(bad))
    with pytest.raises(InputError, match="cannot read"):
        build_app(bundle, config=str(tmp_path / "missing.yaml"))
    with pytest.raises(BundleError):
        build_app(tmp_path / "nothing.json")


def test_serve_run_arguments_are_parsed_from_strings(bundle):
    args = AppArgs.model_validate({"bundle": bundle, "student_replicas": "2",
                                   "max_batch_size": "16", "input_shape": "8,8",
                                   "allow_factories": "a.b:f,c:g"})
    assert args.max_batch_size == 16 and args.input_shape == (8, 8)
    assert args.allow_factories == ["a.b:f", "c:g"]
    assert isinstance(app(args), Application)
    with pytest.raises(ValueError, match="colour"):
        AppArgs.model_validate({"bundle": bundle, "colour": "red"})


def test_serve_run_calls_the_builder_with_strings(bundle):
    """What ``serve run ebjr.ray.serve:app key=value`` does: Ray's own builder call, with
    the command line's strings."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    built = call_user_app_builder_with_args_if_necessary(
        app, {"bundle": bundle, "student_replicas": "2", "max_batch_size": "16",
              "fallback": "error", "input_shape": "8,8"})
    assert isinstance(built, Application)
    with pytest.raises(ValueError, match="max_batch_size"):
        call_user_app_builder_with_args_if_necessary(
            app, {"bundle": bundle, "max_batch_size": "many"})


def test_app_args_follow_the_serve_settings():
    from ebjr.serve.settings import ServeSettings

    taken = set(AppArgs.model_fields)
    for name, f in ServeSettings.model_fields.items():
        if name in ("host", "port", "remote_teacher", "header_timeout_s", "log_level"):
            assert name not in taken  # the single-process server's
        elif name in taken and name != "bundle":
            assert AppArgs.model_fields[name].default == f.get_default(call_default_factory=True)


class _Method:
    """What ``handle.infer`` is to TeacherDeployment: ``.remote(rows)`` gives an awaitable."""

    def __init__(self, outcome):
        self.outcome = outcome

    def remote(self, rows):
        async def answer():
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            await asyncio.sleep(self.outcome)
            return rows

        return answer()


@pytest.mark.parametrize(
    ("outcome", "kind"),
    [
        ("actor_died", "model_error"),  # the teacher's process was killed mid-call
        ("back_pressure", "queue_full"),
        (5.0, "timeout"),  # no answer within the request timeout
    ],
)
def test_the_teacher_deployments_failures_become_the_fallback_policys_input(outcome, kind):
    """A dead, overloaded or silent teacher deployment is TeacherUnavailable of the right kind
    (the fallback policy, tested row for row in tests/joint/test_step.py, takes it from there),
    without timing a real kill."""
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    from ebjr.exceptions import TeacherUnavailable
    from ebjr.ray.student_in_ingress import TeacherDeployment

    error = {"actor_died": ActorDiedError(), "back_pressure": BackPressureError(
        num_queued_requests=9, max_queued_requests=8)}.get(outcome, outcome)
    handle = type("Handle", (), {"infer": _Method(error)})()
    teacher = TeacherDeployment(handle, timeout_s=0.05)
    with pytest.raises(TeacherUnavailable) as info:
        asyncio.run(teacher(np.zeros((3, 8, 8), np.float32)))
    assert info.value.kind == kind
    ok = TeacherDeployment(type("Handle", (), {"infer": _Method(0.0)})(), timeout_s=1.0)
    assert asyncio.run(ok(np.ones((2, 1)))).shape == (2, 1)


def test_the_command_line_passes_the_layout_and_refuses_a_bad_one_before_ray_starts(
        bundle, capsys):
    from ebjr.cli import main

    code = main(["serve", bundle, "--ray", "--ray-data-plane", "ray-default",
                 "--ray-teacher-in-ingress", "--ray-separate-student"])
    assert code == 2
    assert "needs the student there too" in capsys.readouterr().err
    code = main(["serve", bundle, "--ray", "--ray-data-plane", "ray-default",
                 "--ray-teacher-in-ingress", "--teacher-replicas", "2"])
    assert code == 2
    assert "the teacher has no deployment of its own" in capsys.readouterr().err
