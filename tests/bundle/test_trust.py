"""The trust boundary of a bundle: loading one never runs code the user did not name.

Each attack is a bundle an attacker could hand over; each must fail with a
:class:`BundleError` naming the role and the field, before anything is built,
and leave no trace of the code it tried to run (a marker file).
"""

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ebjr
from ebjr.adapters.builders import _BUILDERS, BUILT_IN_BUILDERS, list_builders
from ebjr.adapters.torch_module import TorchAdapter
from ebjr.bundle import persist, read_bundle
from ebjr.exceptions import BundleError, InputError
from ebjr.joint import JointModel
from ebjr.zoo.digits import make_student, make_teacher

X = torch.rand(16, 8, 8)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    s = TorchAdapter(make_student(), factory="ebjr.zoo.digits:make_student")
    t = TorchAdapter(make_teacher(width=4), factory="ebjr.zoo.digits:make_teacher",
                     factory_kwargs={"width": 4})
    path = ebjr.save(JointModel(s, t, "energy", 1.0), tmp_path / "model.json")
    return path, json.loads(path.read_text())


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _shell_marker(tmp_path: Path) -> tuple[str, Path]:
    marker = tmp_path / "pwned"
    return f"touch {marker}", marker


def _attacks(marker_cmd: str) -> dict[str, tuple[dict, str]]:
    """name -> (student reference, what the error must say)."""
    w = {"file": "model.student.state_dict.pt", "sha256": "0" * 64}
    return {
        # the exploit: ebjr's own import-and-call helper, allowed by 'ebjr.*'
        "make_module runs os:system": (
            {"kind": "factory", "factory": "ebjr.training.sources:make_module",
             "kwargs": {"spec": "os:system", "kwargs_json": json.dumps({"command": marker_cmd})},
             **w},
            "'ebjr.training.sources:make_module' is not a registered model builder"),
        # ...and the loader re-entering itself with everything allowed
        "load_model re-enters with *": (
            {"kind": "factory", "factory": "ebjr.bundle.persist:load_model",
             "kwargs": {"path": "evil.json", "role": "student", "allow_factories": ["*"]}, **w},
            "'ebjr.bundle.persist:load_model' is not a registered model builder"),
        "a plain os function": (
            {"kind": "factory", "factory": "os:system", "kwargs": {"command": marker_cmd}, **w},
            "'os:system' is not a registered model builder"),
        "kwargs name another spec in a mapping": (
            {"kind": "factory", "factory": "ebjr.zoo.digits:make_student",
             "kwargs": {"hidden": {"factory": "os:system"}}, **w},
            r"models\.student\.kwargs\.hidden"),
        "a path as the weights file": (
            {"kind": "factory", "factory": "ebjr.zoo.digits:make_student",
             "file": "../../etc/passwd", "sha256": "0" * 64},
            r"models\.student\.file"),
        "an absolute path": (
            {"kind": "torchscript", "file": "/etc/passwd", "sha256": "0" * 64},
            r"models\.student\.file"),
        "an unknown field": (
            {"kind": "factory", "factory": "ebjr.zoo.digits:make_student", "loader": "pickle",
             **w}, r"models\.student\.loader: Extra inputs are not permitted"),
        "an unknown kind": ({"kind": "pickle", **w}, "unknown model kind 'pickle'"),
        "a malformed builder name": (
            {"kind": "factory", "factory": "os.system; rm -rf /", **w},
            r"models\.student\.factory"),
    }


@pytest.mark.parametrize("name", list(_attacks("true")))
def test_bundle_attacks_are_refused_before_anything_runs(saved, tmp_path, name):
    path, doc = saved
    cmd, marker = _shell_marker(tmp_path)
    ref, match = _attacks(cmd)[name]
    bad = copy.deepcopy(doc)
    bad["models"]["student"] = ref
    _write(path, bad)
    for attempt in (lambda: ebjr.load(path), lambda: persist.load_model(path, "student"),
                    lambda: persist.check(path)):
        with pytest.raises(BundleError, match=match):
            attempt()
    assert not marker.exists()


def test_the_exploit_ran_before_this_fix_through_the_cli(saved, tmp_path):
    """ebjr predict and ebjr serve refuse the bundle with one line and exit 2."""
    path, doc = saved
    cmd, marker = _shell_marker(tmp_path)
    bad = copy.deepcopy(doc)
    bad["models"]["student"] = _attacks(cmd)["make_module runs os:system"][0]
    _write(path, bad)
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8), np.float32))
    for args in (["predict", str(path), str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.parquet")],
                 ["serve", str(path), "--port", "0"]):
        r = subprocess.run([sys.executable, "-m", "ebjr.cli", *args], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "not a registered model builder" in r.stderr
        assert "Traceback" not in r.stderr
    assert not marker.exists()


def test_allowing_exactly_one_name_runs_that_name_only(saved):
    path, doc = saved
    bad = copy.deepcopy(doc)
    bad["models"]["student"]["factory"] = "os:getcwd"
    _write(path, bad)
    with pytest.raises(BundleError, match="not a registered model builder"):
        ebjr.load(path, allow_factories=["os:getpid"])  # another exact name: no
    with pytest.raises(BundleError, match=r"refused kwargs|does not take|not a torch module"):
        ebjr.load(path, allow_factories=["os:getcwd"])  # named: it runs, and is not a module
    for pattern in ("os:*", "*", "os.*", "ebjr.*", "os"):
        with pytest.raises(BundleError, match="exact builder names"):
            ebjr.load(path, allow_factories=[pattern])


def test_registered_builders_refuse_absurd_sizes(saved):
    path, doc = saved
    bad = copy.deepcopy(doc)
    bad["models"]["teacher"]["kwargs"] = {"width": 10**9}
    _write(path, bad)
    with pytest.raises(BundleError, match=r"teacher's factory .* refused .* width must be "
                       r"an integer in \[1, 1024\]"):
        ebjr.load(path)
    bad["models"]["teacher"]["kwargs"] = {"width": True}
    _write(path, bad)
    with pytest.raises(BundleError, match="width must be an integer in"):
        ebjr.load(path)
    bad["models"]["teacher"]["kwargs"] = {"depth": 3}
    _write(path, bad)
    with pytest.raises(BundleError, match="does not take kwargs"):
        ebjr.load(path)


def test_builtin_builders_are_exactly_the_decorated_zoo():
    import ebjr.zoo.densenet
    import ebjr.zoo.digits
    import ebjr.zoo.grid_detector
    import ebjr.zoo.regression
    import ebjr.zoo.resnet_cifar
    import ebjr.zoo.torchvision_detection  # noqa: F401  (importing registers; torchvision lazily)

    assert {n for n in _BUILDERS if n.startswith("ebjr.")} == set(BUILT_IN_BUILDERS)
    assert set(BUILT_IN_BUILDERS) <= set(list_builders())


def test_own_builders_register_by_decorator(tmp_path, monkeypatch):
    def nested() -> torch.nn.Module:  # pragma: no cover - never registered
        return torch.nn.Linear(64, 10)

    with pytest.raises(InputError, match="module-level function"):
        ebjr.model_builder(nested)
    (tmp_path / "my_models_for_trust.py").write_text(
        "import torch\nimport ebjr\n\n@ebjr.model_builder\n"
        "def net(hidden: int = 5):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden),"
        " torch.nn.Linear(hidden, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_models_for_trust as mine

    assert "my_models_for_trust:net" in list_builders()
    s = TorchAdapter(mine.net(), factory="my_models_for_trust:net", factory_kwargs={"hidden": 5})
    path = ebjr.save(JointModel(s, s, "energy", 0.0), tmp_path / "b" / "m.json")
    back = ebjr.load(path)  # registered by the code the user imported: no allow needed
    torch.testing.assert_close(back.student(X), s(X))
    monkeypatch.delitem(_BUILDERS, "my_models_for_trust:net")
    with pytest.raises(BundleError, match="not a registered model builder"):
        ebjr.load(path)


def test_weights_are_read_before_the_builder_runs(saved, monkeypatch):
    path, _ = saved
    weights = path.parent / "model.teacher.state_dict.pt"
    calls = []
    import ebjr.zoo.digits as digits

    real = digits.make_teacher
    monkeypatch.setitem(_BUILDERS, "ebjr.zoo.digits:make_teacher",
                        lambda **kw: calls.append(kw) or real(**kw))
    weights.write_bytes(b"not a zip")  # also breaks the digest: re-record it
    doc = json.loads(path.read_text())
    doc["models"]["teacher"]["sha256"] = persist._sha256(weights)
    _write(path, doc)
    with pytest.raises(BundleError, match="not a plain state dict"):
        ebjr.load(path)
    assert calls == []  # the builder never ran on a bad weights file


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"threshold": NaN}', "NaN is not a JSON number"),
        ('{"threshold": Infinity}', "Infinity is not a JSON number"),
        ('{"threshold": 1e999}', "overflows a double"),
        ('{"threshold": 1, "threshold": 2}', "appears twice"),
        ('{"n": 123456789012345678901234567890}', "out of range"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper than"),
        ('{"a": ' + "[" * 40 + "]" * 40 + "}", "nests deeper than 32"),
    ],
)
def test_bundle_json_is_strict(tmp_path, text, match):
    p = tmp_path / "b.json"
    p.write_text(text)
    with pytest.raises(BundleError, match=match):
        read_bundle(p)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"class_map": [-1, -1]}, "class_map maps no student class"),
        ({"class_map": [0, True]}, r"class_map\.1"),
        ({"class_map": [0, 1.5]}, r"class_map\.1"),
        ({"class_map": []}, "class_map"),
        ({"threshold": True}, "threshold"),
        ({"threshold": "1"}, "threshold"),
        ({"input": {"shape": [0, 8]}}, r"input\.shape\.0"),
        ({"input": {"shape": [8], "datatype": "PICKLE"}}, r"input\.datatype"),
        ({"max_teacher_batch": 0}, "max_teacher_batch"),
        ({"curve": {"threshold": [2, 1], "teacher_fraction": [0, 1], "agreement": [1, 1],
                    "cost": [1, 2]}}, "ascending"),
        ({"curve": {"threshold": [1, 2], "teacher_fraction": [0], "agreement": [1, 1],
                    "cost": [1, 2]}}, "teacher_fraction has 1 points"),
        ({"costs": {"student": -1}}, r"costs\.student"),
        ({"router": {"name": "energy", "params": {}, "code": "x"}}, r"router\.code"),
        ({"surprise": 1}, "surprise: Extra inputs"),
    ],
)
def test_every_field_is_typed(saved, change, match):
    path, doc = saved
    _write(path, {**doc, **change})
    with pytest.raises(BundleError, match=match):
        read_bundle(path)


def test_version_1_bundles_migrate_on_read(saved):
    path, doc = saved
    v1 = copy.deepcopy(doc)
    v1["schema_version"] = 1
    for key in ("input", "curve", "max_teacher_batch", "class_map"):
        v1.pop(key, None)
    v1["extra"] = {"input": {"shape": [8, 8], "datatype": "FP32"}, "max_teacher_batch": 16,
                   "curve": {"threshold": [0.0, 1.0], "teacher_fraction": [0.0, 1.0],
                             "accuracy": None, "agreement": [0.9, 1.0], "cost": [1.0, 2.0],
                             "n": 10},
                   "auto_evidence": [1, 2]}
    _write(path, v1)
    b = read_bundle(path)
    assert b.input == {"shape": [8, 8], "datatype": "FP32", "description": None}
    assert b.max_teacher_batch == 16 and b.curve["n"] == 10
    assert b.extra == {"auto_evidence": [1, 2]}
    joint = ebjr.load(path)
    assert joint.max_teacher_batch == 16
    again = ebjr.save(joint, path.parent / "again.json", b)
    assert json.loads(again.read_text())["schema_version"] == 2
    assert read_bundle(again).curve == b.curve


def test_onnx_external_weights_load_only_when_listed_with_their_digest(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    folder = tmp_path / "b"
    folder.mkdir()
    onnx.save_model(model, str(folder / "m.teacher.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.teacher.onnx.data",
                    size_threshold=0)
    student = TorchAdapter(make_student(), factory="ebjr.zoo.digits:make_student")
    path = ebjr.save(JointModel(student, student, "energy", 0.0), folder / "m.json")
    doc = json.loads(path.read_text())
    doc["models"]["teacher"] = {"kind": "onnx", "file": "m.teacher.onnx",
                                "sha256": persist._sha256(folder / "m.teacher.onnx")}
    _write(path, doc)
    with pytest.raises(BundleError, match=r"reads weights from 'm\.teacher\.onnx\.data', which "
                                          r"the bundle does not list"):
        persist.load_model(path, "teacher")
    data = folder / "m.teacher.onnx.data"
    doc["models"]["teacher"]["external_data"] = {data.name: persist._sha256(data)}
    _write(path, doc)
    teacher, _ = persist.load_model(path, "teacher")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(np.asarray(teacher(x)), x @ np.eye(4, 3))
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0x7F  # a modified sibling weights file
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="does not match the bundle"):
        persist.load_model(path, "teacher")


def test_ebjr_serve_stops_on_weights_that_do_not_fit_with_one_line(saved, tmp_path):
    """What only building can find (the builder runs, the weights do not fit) also stops
    ebjr serve before it listens: one line, exit 2, no traceback."""
    path, doc = saved
    bad = copy.deepcopy(doc)
    bad["models"]["teacher"]["kwargs"] = {"width": 8}
    _write(path, bad)
    r = subprocess.run([sys.executable, "-m", "ebjr.cli", "serve", str(path), "--port", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "teacher's weights do not fit" in r.stderr


def test_distill_loads_a_teacher_bundles_teacher_only(saved, tmp_path):
    """ebjr distill --teacher BUNDLE.json used to load the whole bundle with every factory
    allowed; an evil student reference beside a good teacher is never built now."""
    from ebjr.training.sources import load_teacher

    path, doc = saved
    cmd, marker = _shell_marker(tmp_path)
    bad = copy.deepcopy(doc)
    bad["models"]["student"] = _attacks(cmd)["make_module runs os:system"][0]
    _write(path, bad)
    teacher = load_teacher(str(path))
    assert teacher(X).shape == (16, 10) and not marker.exists()
    bad["models"]["teacher"] = _attacks(cmd)["a plain os function"][0]
    _write(path, bad)
    with pytest.raises(BundleError, match="teacher's factory 'os:system'"):
        load_teacher(str(path))
    assert not marker.exists()
