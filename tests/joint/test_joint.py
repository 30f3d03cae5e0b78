import threading
import time

import numpy as np
import pytest
import torch

from ebjr.calibration import tradeoff_curve
from ebjr.exceptions import InputError
from ebjr.joint import JointModel
from ebjr.routing import get_router
from helpers import synthetic


class Counting(torch.nn.Module):
    """Wraps a module and records the size of every batch it is called with."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = []

    def forward(self, x):
        self.calls.append(x.detach().clone())
        return self.inner(x)


@pytest.fixture
def pair():
    torch.manual_seed(0)
    return torch.nn.Linear(6, 4), Counting(torch.nn.Linear(6, 4))


def test_teacher_sees_only_routed_rows(pair):
    student, teacher = pair
    x = torch.randn(50, 6)
    score = get_router("energy").score(student(x).detach())
    t = float(score.median())
    joint = JointModel(student, teacher, "energy", t)
    out = joint.predict(x)
    routed = score < t
    assert len(teacher.calls) == 1
    torch.testing.assert_close(teacher.calls[0], x[routed])
    assert out.to_teacher.tolist() == routed.tolist()
    assert joint.counts() == {
        "batches": 1,
        "rows": 50,
        "student_rows": 50 - int(routed.sum()),
        "teacher_rows": int(routed.sum()),
        "teacher_calls": 1,
        "fallback_rows": 0,
    }


def test_teacher_never_called_when_nothing_is_routed(pair):
    student, teacher = pair
    joint = JointModel(student, teacher, "energy", -np.inf)
    out = joint.predict(torch.randn(20, 6))
    assert teacher.calls == [] and joint.counts()["teacher_calls"] == 0
    assert out.answered_by.tolist() == ["student"] * 20


def test_teacher_batches_are_chunked(pair):
    student, teacher = pair
    joint = JointModel(student, teacher, "energy", np.inf, max_teacher_batch=8)
    joint.predict(torch.randn(20, 6))
    assert [c.shape[0] for c in teacher.calls] == [8, 8, 4]


def test_live_predictions_equal_the_offline_curve():
    s_logits, t_logits, y = synthetic(400, seed=7)
    x = np.arange(400)  # the "inputs" are row indices; the models look the logits up
    student = lambda b: s_logits[np.asarray(b)]  # noqa: E731
    teacher = lambda b: t_logits[np.asarray(b)]  # noqa: E731
    curve = tradeoff_curve(s_logits, t_logits, y, "energy")
    for i in [0, 37, len(curve) // 2, len(curve) - 1]:
        p = curve.point(i)
        out = JointModel(student, teacher, "energy", p.threshold).predict(x)
        assert np.mean(out.predictions == y) == pytest.approx(p.accuracy)
        assert np.mean(out.to_teacher) == pytest.approx(p.teacher_fraction)
        # probabilities are the answering model's
        src = np.where(out.to_teacher[:, None], t_logits, s_logits)
        expected = np.exp(src - src.max(1, keepdims=True))
        np.testing.assert_allclose(out.probabilities, expected / expected.sum(1, keepdims=True))


def test_numpy_and_torch_batches_give_the_same_answer(pair):
    student, teacher = pair
    x = torch.randn(30, 6)
    joint = JointModel(student, teacher, "softmax", 0.5)
    a, b = joint.predict(x), joint.predict(x.numpy())
    assert torch.equal(a.predictions, b.predictions)


def test_threshold_changes_from_another_thread_are_atomic_per_batch():
    rng = np.random.default_rng(0)
    s_logits = rng.normal(size=(256, 5)) * 3
    t_logits = rng.normal(size=(256, 5))
    joint = JointModel(lambda b: s_logits, lambda b: t_logits[: len(b)], "energy", 1.0)
    score = get_router("energy").score(s_logits)
    stop = threading.Event()
    values = np.quantile(score, np.linspace(0.05, 0.95, 19))

    def knob():
        i = 0
        while not stop.is_set():
            joint.set_threshold(float(values[i % len(values)]))
            i += 1
            time.sleep(0.0002)

    thread = threading.Thread(target=knob)
    thread.start()
    try:
        seen = set()
        for _ in range(300):
            out = joint.predict(np.zeros((256, 1)))
            # every row was routed with the one threshold the batch reports
            np.testing.assert_array_equal(out.to_teacher, score < out.threshold)
            seen.add(out.threshold)
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 3  # the knob really moved during the stream


def test_class_map_puts_student_answers_in_teacher_space():
    s = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    t = np.eye(6)[[4, 5, 1]] * 9.0
    joint = JointModel(lambda b: s, lambda b: t[: len(b)], "energy", -np.inf, class_map=[3, 1, -1])
    out = joint.predict(np.zeros((3, 1)))
    assert out.predictions.tolist() == [3, 1, -1]
    assert out.probabilities.shape == (3, 4)  # no teacher ran: the map's largest class + 1
    np.testing.assert_allclose(out.probabilities[0, 3], np.exp(5) / (np.exp(5) + 2))


@pytest.mark.parametrize("class_map", [[3, 1], [3, 1, -1, 0], [3, 1, 6]])
def test_a_class_map_that_does_not_fit_the_models_is_named(class_map):
    """Too short, too long, or into a class the teacher lacks: a clear error, not an
    IndexError (a bundle's class_map is checked against the models it meets)."""
    s = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    t = np.eye(6)[[4, 5, 1]] * 9.0
    joint = JointModel(lambda b: s, lambda b: t[: len(b)], "energy", np.inf, class_map=class_map)
    with pytest.raises(InputError, match=r"class_map has .* entries .* student gives 3 classes "
                                         r"and the teacher 6"):
        joint.predict(np.zeros((3, 1)))


def test_errors(pair):
    student, teacher = pair
    joint = JointModel(student, teacher, "energy", 0.0)
    with pytest.raises(InputError, match="the batch is empty"):
        joint.predict(torch.zeros(0, 6))
    with pytest.raises(InputError, match="threshold must be a real number"):
        joint.set_threshold("high")
    with pytest.raises(InputError, match="max_teacher_batch must be a positive integer"):
        JointModel(student, teacher, max_teacher_batch=0)
    wide = JointModel(student, torch.nn.Linear(6, 7), "energy", np.inf)
    with pytest.raises(InputError, match="pass class_map"):
        wide.predict(torch.randn(3, 6))
    bad = JointModel(lambda b: np.full((len(b), 3), np.nan), teacher, "energy", 0.0)
    with pytest.raises(InputError, match="NaN or infinite"):
        bad.predict(np.zeros((2, 6)))
    short = JointModel(lambda b: np.zeros((1, 3)), teacher, "energy", 0.0)
    with pytest.raises(InputError, match="returned 1 rows of logits for a batch of 4"):
        short.predict(np.zeros((4, 6)))
    with pytest.raises(InputError, match="'auto' router must be fitted"):
        JointModel(student, teacher, "auto")


def test_stream_pools_routed_rows_and_matches_per_batch_predict(pair):
    student, teacher = pair
    x = torch.randn(200, 6)
    score = get_router("energy").score(student(x).detach())
    joint = JointModel(student, teacher, "energy", float(torch.quantile(score, 0.3)))
    sizes = [8, 1, 13, 32, 8, 50, 7, 81]
    chunks = list(torch.split(x, sizes))
    expected = [joint.predict(c) for c in chunks]
    teacher.calls.clear()
    joint.reset_counts()
    got = list(joint.predict_stream(iter(chunks), teacher_batch_size=20))
    assert len(got) == len(chunks)
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e.predictions, g.predictions)
        assert torch.equal(e.to_teacher, g.to_teacher)
        torch.testing.assert_close(e.probabilities, g.probabilities)
    # fewer, larger teacher calls: every call but the last carries >= 20 rows
    sizes_seen = [c.shape[0] for c in teacher.calls]
    assert len(sizes_seen) < sum(1 for e in expected if e.to_teacher.any())
    assert all(s >= 20 for s in sizes_seen[:-1])
    assert sum(sizes_seen) == joint.counts()["teacher_rows"] == int((score < joint.threshold).sum())


def test_stream_handles_numpy_lists_and_threshold_changes():
    s_logits, t_logits, _ = synthetic(90, seed=3)
    joint = JointModel(
        lambda b: s_logits[np.asarray(b)], lambda b: t_logits[np.asarray(b)], "energy", 1.0
    )
    score = np.log(np.exp(s_logits).sum(1))

    def batches():
        for i, start in enumerate(range(0, 90, 10)):
            joint.set_threshold(float(np.quantile(score, 0.1 * (i % 5))))
            yield list(range(start, start + 10))

    for i, out in enumerate(joint.predict_stream(batches(), teacher_batch_size=7)):
        rows = np.arange(10 * i, 10 * i + 10)
        np.testing.assert_array_equal(out.to_teacher, score[rows] < out.threshold)
        np.testing.assert_array_equal(
            out.predictions,
            np.where(out.to_teacher, t_logits[rows].argmax(1), s_logits[rows].argmax(1)),
        )
    with pytest.raises(InputError, match="teacher_batch_size must be a positive integer"):
        next(joint.predict_stream([[0]], teacher_batch_size=0))


def test_merge_without_teacher_logits_is_the_students_answer_and_counts_fallback():
    x = torch.randn(30, 4)
    student = torch.nn.Linear(4, 3)
    teacher = torch.nn.Linear(4, 3)
    joint = JointModel(student, teacher, "energy", threshold=1e9)  # everything routed
    routed = joint.route(x)
    assert routed.k == 30
    out = joint.merge(routed, None)  # the teacher failed: the student answers every row
    with torch.no_grad():
        torch.testing.assert_close(out.predictions, student(x).argmax(1))
    c = joint.counts()
    assert c["fallback_rows"] == 30 and c["teacher_rows"] == 0 and c["student_rows"] == 30


def test_outputs_are_checked_once_and_the_log_probability_test_runs_once(monkeypatch):
    """The student's logits are checked at the adapter's boundary only; whether they are
    log-probabilities is asked once per model, not per batch."""
    from ebjr import scores as score_fns
    from ebjr._utils import arrays
    from ebjr.adapters.callable import CallableAdapter
    from ebjr.exceptions import LogProbabilityInputError
    from ebjr.joint import JointModel

    calls = {"check_logits": 0, "log_probs": 0}
    real_check, real_lp = arrays.check_logits, score_fns.looks_like_log_probabilities

    def counting_check(*a, **k):
        calls["check_logits"] += 1
        return real_check(*a, **k)

    def counting_lp(*a, **k):
        calls["log_probs"] += 1
        return real_lp(*a, **k)

    monkeypatch.setattr("ebjr.tasks.classification.check_logits", counting_check)
    monkeypatch.setattr("ebjr.routing.base.check_logits", counting_check)
    monkeypatch.setattr("ebjr.routing.base.scores.looks_like_log_probabilities", counting_lp)
    rng = np.random.default_rng(0)
    joint = JointModel(lambda x: x, lambda x: x * 3.0, "energy", threshold=1.0)
    for _ in range(5):
        joint.predict(rng.normal(size=(8, 4)))
    assert calls["log_probs"] == 1
    # one check per model call: the student's five, and the teacher's (batches with routed rows)
    assert calls["check_logits"] == 5 + joint.counts()["teacher_calls"]

    def log_softmax(x):
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    with pytest.raises(LogProbabilityInputError, match="needs raw logits"):
        JointModel(log_softmax, lambda x: x, "energy", 0.0).predict(rng.normal(size=(4, 3)))
    # a model known to give log-probabilities is refused even on one row
    known = CallableAdapter(log_softmax, returns_log_probs=True)
    with pytest.raises(LogProbabilityInputError):
        JointModel(known, lambda x: x, "energy", 0.0).predict(rng.normal(size=(1, 3)))
    # routers that do not need raw logits take them
    JointModel(known, lambda x: x, "softmax", 0.5).predict(rng.normal(size=(4, 3)))


@pytest.mark.parametrize("namespace", ["numpy", "torch"])
@pytest.mark.parametrize("teacher_dtype", ["same", "float64"])
@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_merged_answers_equal_each_models_own_softmax_and_argmax(namespace, teacher_dtype, share):
    """Both merges (logits first when the label space and dtype agree, probabilities
    otherwise) give, row by row, the answering model's own argmax and softmax."""
    from scipy.special import softmax

    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 5)).astype(np.float32) * 3
    w_s, w_t = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))

    def model(w, dtype):
        def f(batch):
            out = np.asarray(batch, np.float64) @ w
            out = out.astype(dtype)
            return torch.from_numpy(out) if namespace == "torch" else out
        return f

    t_dtype = np.float32 if teacher_dtype == "same" else np.float64
    s_logits = np.asarray(x, np.float64) @ w_s
    scores = get_router("softmax").score(s_logits.astype(np.float32))
    threshold = np.inf if share == 1.0 else float(np.quantile(scores, share)) if share else -np.inf
    joint = JointModel(model(w_s, np.float32), model(w_t, t_dtype), "softmax", threshold)
    out = joint.predict(torch.from_numpy(x) if namespace == "torch" else x)
    mask = np.asarray(out.to_teacher)
    assert mask.mean() == pytest.approx(share, abs=0.03)
    want_logits = np.where(mask[:, None], (np.asarray(x, np.float64) @ w_t).astype(t_dtype),
                           s_logits.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(out.predictions), want_logits.argmax(1))
    np.testing.assert_allclose(np.asarray(out.probabilities),
                               softmax(want_logits.astype(np.float64), axis=1), atol=2e-6)
    assert np.asarray(out.probabilities).dtype == np.float32
