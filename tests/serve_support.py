"""Helpers for the inference-service tests: a small real bundle, and real servers on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROW_SHAPE = (8, 8)


def make_serve_bundle(folder: Path, threshold_share: float = 0.3) -> Path:
    """A real bundle: seeded digits student and teacher (untrained), calibrated on random inputs.

    The threshold sends about ``threshold_share`` of random traffic to the teacher,
    and the bundle carries the curve and the input record, as the quickstart's does.
    """
    import torch

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import persist
    from ebjr.calibration import MaxTeacherFraction
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.joint import JointModel
    from ebjr.zoo import digits

    torch.manual_seed(0)
    student = TorchAdapter(digits.make_student().eval(), factory="ebjr.zoo.digits:make_student")
    teacher = TorchAdapter(digits.make_teacher().eval(), factory="ebjr.zoo.digits:make_teacher")
    x = random_rows(600, seed=1)
    s, t = student(x).numpy(), teacher(x).numpy()
    result = calibrate_outputs(
        s, t, t.argmax(1), MaxTeacherFraction(threshold_share), router="energy",
        student_cost=7.1e3, teacher_cost=9.7e5, cost_unit="FLOPs",
    )
    result.bundle.input = {"shape": list(ROW_SHAPE), "datatype": "FP32"}
    joint = JointModel(student, teacher, result.router, result.selection.threshold)
    return persist.save(joint, folder / "small.json", result.bundle)


def make_regression_bundle(folder: Path, threshold_share: float = 0.3) -> Path:
    """A real regression bundle: seeded Gaussian-head MLPs (untrained) with 10 features, the
    ``spread`` router at the threshold that sends ``threshold_share`` of uniform random rows
    to the teacher; the curve and the input record as the regression quickstart writes."""
    import torch

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import persist
    from ebjr.calibration import MaxTeacherFraction
    from ebjr.calibration.calibrate import calibrate_outputs
    from ebjr.joint import JointModel
    from ebjr.tasks import Regression
    from ebjr.zoo.regression import make_gaussian_mlp

    torch.manual_seed(0)
    kw = {"student": {"in_features": 10, "hidden": 8, "depth": 1, "y_mean": 14.0, "y_scale": 5.0},
          "teacher": {"in_features": 10, "hidden": 32, "depth": 2, "y_mean": 14.0,
                      "y_scale": 5.0}}
    models = {role: TorchAdapter(make_gaussian_mlp(**kw[role]).eval(),
                                 factory="ebjr.zoo.regression:make_gaussian_mlp",
                                 factory_kwargs=kw[role]) for role in kw}
    x = regression_rows(600, seed=1)
    s, t = models["student"].forward(x).numpy(), models["teacher"].forward(x).numpy()
    task = Regression(columns=["prediction", "std"])
    result = calibrate_outputs(s, t, t[:, 0], MaxTeacherFraction(threshold_share),
                               router="spread", student_cost=200.0, teacher_cost=2.4e3,
                               cost_unit="FLOPs", task=task)
    result.bundle.input = {"shape": [10], "datatype": "FP32"}
    joint = JointModel(models["student"], models["teacher"], result.router,
                       result.selection.threshold, task=task)
    return persist.save(joint, folder / "reg.json", result.bundle)


def regression_rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows of 10 uniform features in [0, 1] (float32), the regression bundle's input."""
    return np.random.default_rng(seed).uniform(size=(n, 10)).astype(np.float32)


def regression_reference(bundle: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """What a regression bundle's joint model must answer, written out independently: both
    regressors on *every* row, then the ``spread`` rule ``-std < threshold -> teacher`` per
    row with numpy (no ebjr routing)."""
    import ebjr

    joint = ebjr.load(bundle)
    s = joint.student.forward(x).numpy().astype(np.float64)
    t = joint.teacher.forward(x).numpy().astype(np.float64)
    pred, scores, who = [], [], []
    for i in range(len(x)):
        score = -s[i, 1]
        teacher = score < joint.threshold
        pred.append(t[i, 0] if teacher else s[i, 0])
        scores.append(score)
        who.append("teacher" if teacher else "student")
    return {"predictions": np.array(pred), "scores": np.array(scores),
            "answered_by": np.array(who)}


def check_regression(got: dict, want: dict) -> None:
    """Answers equal up to float32 rounding; who answered, exactly."""
    np.testing.assert_allclose(got["predictions"], want["predictions"], rtol=1e-6)
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6)
    who = [a.decode() if isinstance(a, bytes) else str(a) for a in got["answered_by"]]
    assert who == want["answered_by"].tolist()


def make_detection_bundle(folder: Path, max_detections: int = 8) -> Path:
    """A real detection bundle: two seeded grid detectors (untrained) with their decoding
    (``ebjr.zoo.grid_detector:make_grid_detection_model``), the eq. 14 energy router at the
    median score of a few canvases, 48x48 inputs, ``max_detections`` protocol slots."""
    import torch

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import RoutingBundle, persist
    from ebjr.joint.detector import JointDetector
    from ebjr.zoo.grid_detector import make_grid_detection_model

    torch.manual_seed(0)
    kw = {"student": {"width": 4, "min_confidence": 0.5},
          "teacher": {"width": 8, "extra": 1, "min_confidence": 0.5}}
    models = {role: TorchAdapter(make_grid_detection_model(**kw[role]).eval(),
                                 factory="ebjr.zoo.grid_detector:make_grid_detection_model",
                                 factory_kwargs=kw[role]) for role in kw}
    joint = JointDetector(models["student"], models["teacher"], 0.0,
                          max_detections=max_detections)
    scores = np.asarray(joint.route(detection_rows(16, seed=1)).scores)
    joint.set_threshold(float(np.median(scores[np.isfinite(scores)])))
    record = RoutingBundle(router=joint.router.to_spec(), threshold=joint.threshold, costs={},
                           target={}, calibration={},
                           input={"shape": [48, 48], "datatype": "FP32"})
    return persist.save(joint, folder / "det.json", record)


def detection_rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` seeded 48x48 digit canvases (float32), the detection bundle's input."""
    from ebjr.zoo.digit_canvas import make_digit_canvases

    return np.asarray(make_digit_canvases(n, seed=seed).images, dtype=np.float32)


def make_cascade_bundle(folder: Path, combine: str = "last", name: str = "zoo",
                        faulty_last: bool = False) -> Path:
    """A real 3-stage cascade document: seeded digits models of growing size (untrained),
    softmax router, thresholds that pass about 60 % of random rows on from the first stage and
    half of those from the second; with the input record. ``faulty_last``: the last stage
    is :func:`faulty_student` (a RuntimeError on negative inputs)."""
    import torch

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import persist
    from ebjr.joint.cascade import Cascade, answer_logits
    from ebjr.joint.cascade_model import CascadeModel
    from ebjr.routing import get_router
    from ebjr.zoo import digits

    torch.manual_seed(0)
    f = "ebjr.zoo.digits:"
    models = {
        "small": TorchAdapter(digits.make_student(hidden=8).eval(), factory=f + "make_student",
                              factory_kwargs={"hidden": 8}),
        "mid": TorchAdapter(digits.make_student(hidden=64).eval(), factory=f + "make_student",
                            factory_kwargs={"hidden": 64}),
        "big": TorchAdapter(faulty_student() if faulty_last else digits.make_teacher().eval(),
                            factory="serve_support:faulty_student" if faulty_last
                            else f + "make_teacher"),
    }
    x = random_rows(600, seed=1)
    answers = answer_logits([models[m](x).numpy() for m in ("small", "mid")], combine)
    router = get_router("softmax")
    t0 = float(np.quantile(router.score(answers[0]), 0.6))
    t1 = float(np.quantile(router.score(answers[1]), 0.5))
    cascade = Cascade(("small", "mid", "big"), (t0, t1), (1.0, 8.0, 60.0), router, combine)
    live = CascadeModel(models, cascade, input={"shape": list(ROW_SHAPE), "datatype": "FP32"})
    return persist.save(live, folder / f"{name}.json")


def cascade_reference(bundle, x, thresholds=None):
    """Every stage on every row, then Cascade.apply: predictions, probabilities, scores,
    answered_by."""
    from scipy.special import softmax

    import ebjr
    from ebjr.joint.cascade import answer_logits

    live = ebjr.load(bundle)
    c = live.cascade
    if thresholds is not None:
        from dataclasses import replace

        c = replace(c, thresholds=tuple(thresholds))
    logits = {s: live.adapters[s](x).numpy().astype(np.float64) for s in c.stages}
    r = c.apply(logits)
    answers = np.stack(answer_logits([logits[s] for s in c.stages], c.combine))
    mine = answers[r.exit_stage, np.arange(len(x))]
    return {"predictions": r.predictions, "probabilities": softmax(mine, axis=1),
            "scores": softmax(mine, axis=1).max(axis=1), "answered_by": r.answered_by}


def check_cascade(got, want):
    np.testing.assert_array_equal(got["predictions"], want["predictions"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=2e-6)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=2e-6)
    assert [str(a) for a in got["answered_by"]] == want["answered_by"].tolist()


def faulty_student() -> Any:
    """A digits student that fails like a broken model: logits that overflow to NaN on inputs
    beyond 1e30, and a RuntimeError on negative inputs."""
    import torch

    from ebjr.zoo import digits

    class Faulty(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = digits.make_student()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((x < 0).any()):
                raise RuntimeError("the student refuses negative pixels")
            out = self.inner(x)
            big = x.flatten(1).amax(dim=1) > 1e30
            return torch.where(big[:, None], torch.full_like(out, float("nan")), out)

    return Faulty()


def slow_teacher() -> Any:
    """The digits teacher, 40 ms slower per call: a teacher that is busy under load
    (so that killing its process meets calls in flight)."""
    import torch

    from ebjr.zoo import digits

    class Slow(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = digits.make_teacher()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.04)
            return self.inner(x)

    return Slow()


def make_slow_teacher_bundle(folder: Path) -> Path:
    """:func:`make_serve_bundle`'s models and threshold, with :func:`slow_teacher`'s delay
    (factory ``serve_support:slow_teacher``)."""
    import torch

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import persist, read_bundle

    fast = Path(make_serve_bundle(folder))
    joint = persist.load(fast)
    slow = slow_teacher()
    slow.inner.load_state_dict(joint.teacher.module.state_dict())  # type: ignore[union-attr]
    slow.eval()
    teacher = TorchAdapter(slow, factory="serve_support:slow_teacher")
    joint.teacher = teacher
    torch.manual_seed(0)
    return persist.save(joint, folder / "slow.json", read_bundle(fast))


def make_faulty_bundle(folder: Path) -> Path:
    """A joint bundle whose student is :func:`faulty_student` (an allowed factory)."""
    import torch

    from ebjr.adapters.torch_module import TorchAdapter
    from ebjr.bundle import RoutingBundle, persist
    from ebjr.joint import JointModel
    from ebjr.zoo import digits

    torch.manual_seed(0)
    student = TorchAdapter(faulty_student().eval(), factory="serve_support:faulty_student")
    teacher = TorchAdapter(digits.make_teacher().eval(), factory="ebjr.zoo.digits:make_teacher")
    bundle = RoutingBundle(router={"name": "energy", "params": {}}, threshold=2.3,
                           costs={"student": 1.0, "teacher": 10.0, "unit": ""},
                           target={"kind": "manual"}, calibration={},
                           input={"shape": list(ROW_SHAPE), "datatype": "FP32"})
    joint = JointModel(student, teacher, "energy", 2.3)
    return persist.save(joint, folder / "faulty.json", bundle)


def random_rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *ROW_SHAPE)).astype(np.float32)


def infer_body(x: np.ndarray, name: str = "input", datatype: str = "FP32") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype,
                        "data": x.reshape(-1).tolist()}]}


def outputs(payload: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in payload["outputs"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``ebjr serve ARGS`` in a subprocess on a free loopback port; waits until ready."""

    def __init__(self, *args: str, port: int | None = None, env: dict | None = None,
                 log_level: str = "warning") -> None:
        self.port = port or free_port()
        self.args = [sys.executable, "-m", "ebjr.cli", "serve", *args, "--port", str(self.port),
                     "--log-level", log_level]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self._log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would block
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self) -> int:
        """SIGTERM (graceful shutdown); returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def output(self) -> str:
        """Everything the server printed so far."""
        self._log.seek(0)
        return self._log.read()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


def read_all(sock: Any) -> bytes:
    """Everything a raw socket receives until the server closes it (or resets it); closes it."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


# ---------------------------------------------------------------- bad requests
# one table, asked of every server: ebjr serve in process, in a subprocess, and on Ray Serve
BAD = [
    ("wrong row shape", lambda: infer_body(random_rows(2)[:, :, :7]), 400, "expected shape"),
    ("bytes", lambda: {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                                   "data": ["x"]}]}, 400, "does not match the model's 'FP32'"),
    ("wrong input name", lambda: infer_body(random_rows(1), name="INPUT__0"), 400,
     "unknown input 'INPUT__0'; this model's input is 'input'"),
    ("wrong datatype", lambda: infer_body(random_rows(1), datatype="FP64"), 400,
     "datatype 'FP64' does not match the model's 'FP32'"),
    ("FP32 out of range", lambda: {"inputs": [{"name": "input", "shape": [1, 8, 8],
                                               "datatype": "FP32", "data": [4e38] * 64}]},
     400, "values must lie in [-3.40282e+38, 3.40282e+38] for datatype FP32"),
    ("booleans", lambda: {"inputs": [{"name": "input", "shape": [1, 8, 8],
                                      "datatype": "FP32", "data": [True] * 64}]},
     400, "inputs.0.data.0: expected a number (or equally nested lists of numbers), got True"),
    ("true among numbers", lambda: {"inputs": [{"name": "input", "shape": [1, 8, 8],
                                                "datatype": "FP32", "data": [1.0] * 63 + [True]}]},
     400, "inputs.0.data.63: expected a number (or equally nested lists of numbers), got True"),
    ("mixed strings", lambda: {"inputs": [{"name": "input", "shape": [1, 8, 8],
                                           "datatype": "FP32", "data": [1.0] * 63 + ["2"]}]},
     400, "inputs.0.data.63: expected a number (or equally nested lists of numbers), got '2'"),
    ("classification", lambda: {**infer_body(random_rows(1)), "outputs": [
        {"name": "probabilities", "parameters": {"class_count": 3}}]}, 400,
     "classification extension is not supported"),
    ("too many rows", lambda: infer_body(random_rows(300)), 400, "at most 256"),
    ("no inputs", lambda: {"inputs": []}, 400, "inputs"),
    ("two inputs", lambda: {"inputs": [infer_body(random_rows(1))["inputs"][0]] * 2}, 400,
     "inputs"),
    ("missing data", lambda: {"inputs": [{"name": "input", "shape": [1, 8, 8],
                                          "datatype": "FP32"}]}, 400, "data"),
    ("size mismatch", lambda: {"inputs": [{"name": "input", "shape": [1, 8, 8],
                                           "datatype": "FP32", "data": [1.0]}]}, 400, "needs 64"),
    ("strings as numbers", lambda: {"inputs": [{"name": "input", "shape": [1, 8, 8],
                                                "datatype": "FP32", "data": ["a"] * 64}]}, 400,
     "numbers"),
]


def binary_body(x: np.ndarray, size: int | None = None, header_extra: int = 0,
                 tail: bytes = b"", cut: int = 0) -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f4").tobytes()
    raw = raw[: len(raw) - cut]
    head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": size or len(raw)}}]})
    return (head.encode() + raw + tail,
            {"Inference-Header-Content-Length": str(len(head) + header_extra)})


BAD_BINARY = [
    ("binary size not the shape's", lambda x: binary_body(x, cut=4),
     "needs 256 bytes of binary data, got 252"),
    ("binary past the end", lambda x: binary_body(x, size=len(x.tobytes()) + 8),
     "runs past the end of the body"),
    ("bytes no input accounts for", lambda x: binary_body(x, tail=b"\0" * 12),
     "12 bytes after the JSON header that no input's binary_data_size accounts for"),
    ("header length past the body", lambda x: binary_body(x, header_extra=10_000),
     "Inference-Header-Content-Length must be a whole number of bytes"),
    ("header length cuts the JSON", lambda x: binary_body(x, header_extra=-5),
     "invalid request"),
]
