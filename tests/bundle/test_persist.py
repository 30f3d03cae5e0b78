import json

import numpy as np
import pytest
import torch

import ebjr
from ebjr.adapters.torch_module import TorchAdapter
from ebjr.exceptions import BundleError
from ebjr.joint import JointModel
from ebjr.zoo.digits import make_student, make_teacher

X = torch.rand(64, 8, 8)


@pytest.fixture
def joint():
    torch.manual_seed(0)
    s = TorchAdapter(make_student(), factory="ebjr.zoo.digits:make_student")
    t = TorchAdapter(
        make_teacher(width=4), factory="ebjr.zoo.digits:make_teacher", factory_kwargs={"width": 4}
    )
    score = s(X)
    thr = float(torch.logsumexp(score, 1).median())
    return JointModel(s, t, "energy", thr, max_teacher_batch=16)


def _same(a, b):
    assert torch.equal(a.predictions, b.predictions)
    torch.testing.assert_close(a.probabilities, b.probabilities)
    assert a.threshold == b.threshold


def test_factory_round_trip_gives_identical_predictions(joint, tmp_path):
    path = ebjr.save(joint, tmp_path / "b" / "model.json")
    back = ebjr.load(path)
    _same(joint.predict(X), back.predict(X))
    assert back.max_teacher_batch == 16
    ref = json.loads(path.read_text())["models"]["teacher"]
    assert ref["kind"] == "factory" and ref["kwargs"] == {"width": 4} and len(ref["sha256"]) == 64


def test_torchscript_and_onnx_round_trips(tmp_path):
    torch.manual_seed(1)
    student = torch.jit.script(make_student())
    teacher_module = make_teacher(width=4).eval()
    onnx_path = tmp_path / "teacher.onnx"
    torch.onnx.export(
        teacher_module,
        (X[:2],),
        str(onnx_path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("n")},),
        dynamo=True,
        verbose=False,
    )
    joint = JointModel(student, str(onnx_path), "softmax", 0.2)
    path = ebjr.save(joint, tmp_path / "out" / "m.json")
    with pytest.raises(BundleError, match="student is a TorchScript archive, which is a program"):
        ebjr.load(path)  # TorchScript is code: never loaded unless the caller says so
    back = ebjr.load(path, allow_torchscript=True)
    a, b = joint.predict(X), back.predict(X)
    assert torch.equal(a.predictions, b.predictions)
    assert (tmp_path / "out" / "m.teacher.onnx").is_file()


def test_missing_and_tampered_files_fail_clearly(joint, tmp_path):
    path = ebjr.save(joint, tmp_path / "model.json")
    weights = tmp_path / "model.teacher.state_dict.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"teacher's model file .* does not match the bundle"):
        ebjr.load(path)
    weights.unlink()
    with pytest.raises(BundleError, match="teacher's model file is missing"):
        ebjr.load(path)


def test_untrusted_factory_is_refused_unless_allowed(joint, tmp_path):
    path = ebjr.save(joint, tmp_path / "model.json")
    d = json.loads(path.read_text())
    d["models"]["student"]["factory"] = "os:system"
    path.write_text(json.dumps(d))
    with pytest.raises(BundleError, match="'os:system' is not a registered model builder"):
        ebjr.load(path)
    d["models"]["student"]["factory"] = "tests_factories:nothing"
    path.write_text(json.dumps(d))
    with pytest.raises(BundleError, match=r"the student's factory: cannot import the factory"):
        ebjr.load(path, allow_factories=["tests_factories:nothing"])
    with pytest.raises(BundleError, match="exact builder names"):
        ebjr.load(path, allow_factories=["tests_factories:*"])


def test_weights_that_do_not_fit_fail_clearly(joint, tmp_path):
    path = ebjr.save(joint, tmp_path / "model.json")
    d = json.loads(path.read_text())
    d["models"]["teacher"]["kwargs"] = {"width": 8}
    path.write_text(json.dumps(d))
    with pytest.raises(BundleError, match="teacher's weights do not fit"):
        ebjr.load(path)


def test_models_without_a_reference_cannot_be_saved(tmp_path):
    joint = JointModel(lambda b: np.zeros((len(b), 3)), lambda b: np.zeros((len(b), 3)))
    with pytest.raises(BundleError, match="cannot save the student"):
        ebjr.save(joint, tmp_path / "m.json")


def test_routing_only_bundle_is_explained(tmp_path):
    from ebjr.bundle import RoutingBundle, write_bundle

    p = write_bundle(
        RoutingBundle({"name": "energy", "params": {}}, 1.0, {}, {}, {}), tmp_path / "r.json"
    )
    with pytest.raises(BundleError, match="routing bundle without model references"):
        ebjr.load(p)


def test_weights_are_loaded_without_unpickling_objects(joint, tmp_path):
    path = ebjr.save(joint, tmp_path / "model.json")
    evil = tmp_path / "model.student.state_dict.pt"

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Boom()}, evil)
    d = json.loads(path.read_text())
    import hashlib

    d["models"]["student"]["sha256"] = hashlib.sha256(evil.read_bytes()).hexdigest()
    path.write_text(json.dumps(d))
    with pytest.raises(BundleError, match="not a plain state dict of tensors"):
        ebjr.load(path)


@pytest.fixture
def cascade_model():
    from ebjr.joint.cascade import Cascade
    from ebjr.joint.cascade_model import CascadeModel

    torch.manual_seed(2)
    models = {
        "small": TorchAdapter(make_student(), factory="ebjr.zoo.digits:make_student"),
        "mid": TorchAdapter(make_teacher(width=2), factory="ebjr.zoo.digits:make_teacher",
                            factory_kwargs={"width": 2}),
        "big": TorchAdapter(make_teacher(width=4), factory="ebjr.zoo.digits:make_teacher",
                            factory_kwargs={"width": 4}),
    }
    cascade = Cascade(tuple(models), (0.2, 0.2), costs=(1, 3, 9), router="softmax",
                      combine="mean", reference="big", details={"note": "test"})
    return CascadeModel(models, cascade)


def test_a_cascade_of_models_round_trips(cascade_model, tmp_path):
    from ebjr.joint.cascade_model import CascadeModel

    with torch.no_grad():  # the small stage answers about a third of the rows, mid some more
        conf = torch.softmax(cascade_model.adapters["small"].forward(X), 1).max(1).values
    knob = (float(conf.quantile(0.66)), float(conf.quantile(0.5)))
    cascade_model.set_thresholds(knob)  # the live knob is what is saved
    path = ebjr.save(cascade_model, tmp_path / "c" / "cascade.json")
    back = ebjr.load(path)
    assert isinstance(back, CascadeModel) and back.thresholds == knob
    assert back.cascade.combine == "mean" and back.cascade.details == {"note": "test"}
    a, b = cascade_model.predict(X), back.predict(X)
    assert torch.equal(a.predictions, b.predictions)
    assert np.array_equal(a.exit_stage, b.exit_stage) and len(set(a.exit_stage.tolist())) > 1
    doc = json.loads(path.read_text())
    assert [s["model"]["kind"] for s in doc["stages"]] == ["factory"] * 3
    assert doc["stages"][2]["model"]["kwargs"] == {"width": 4}


def test_a_cascades_models_are_checked_before_any_is_built(cascade_model, tmp_path):
    path = ebjr.save(cascade_model, tmp_path / "cascade.json")
    weights = tmp_path / "cascade.stage1.state_dict.pt"
    assert weights.is_file(), sorted(p.name for p in tmp_path.iterdir())
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"stage 'mid''s model file .* does not match"):
        ebjr.load(path)
    d = json.loads(path.read_text())
    d["stages"][0]["model"]["factory"] = "os:system"
    path.write_text(json.dumps(d))
    with pytest.raises(BundleError, match="'os:system' is not a registered model builder"):
        ebjr.load(path)
    d["stages"][0]["model"] = {"kind": "pickle", "file": "x"}
    path.write_text(json.dumps(d))
    with pytest.raises(BundleError, match="small"):
        ebjr.load(path)


def test_an_outputs_only_cascade_document_is_explained(tmp_path):
    from ebjr.bundle.cascade import write_cascade
    from ebjr.joint.cascade import Cascade

    p = write_cascade(Cascade(("a", "b"), (0.5,), router="softmax"), tmp_path / "c.json")
    with pytest.raises(BundleError, match=r"without model references for \['a', 'b'\]"):
        ebjr.load(p)


def test_what_cannot_be_saved_is_refused_with_a_reason(tmp_path):
    from ebjr.joint.detector import JointDetector

    detector = JointDetector(lambda x: [], lambda x: [], threshold=0.0)
    with pytest.raises(BundleError, match="cannot save the student"):
        ebjr.save(detector, tmp_path / "d.json")
    with pytest.raises(BundleError, match="or a CascadeModel, got dict"):
        ebjr.save({}, tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists()
