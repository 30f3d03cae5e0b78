"""The one serving step both servers call (ebjr serve's engine, the Ray student replica):
answers per request, labels, the fallback policy, checked against a loop written out per row."""

import asyncio

import numpy as np
import pytest

from ebjr.exceptions import ModelError, TeacherUnavailable
from ebjr.joint import JointModel
from ebjr.joint.step import JointAnswer, finish_batch, model_failure

RNG = np.random.default_rng(3)
S = RNG.normal(size=(12, 4)) * 3
T = RNG.normal(size=(12, 4)) * 3
SIZES = [3, 5, 4]


def _step(teacher_fails: bool, fallback: str):
    joint = JointModel(lambda b: S[b[:, 0].astype(int)], None, "softmax", 0.6)
    batch = np.arange(12, dtype=np.float64)[:, None]
    routed = joint.route(batch)
    asked = []

    async def ask(rows):
        asked.append(rows[:, 0].astype(int).tolist())
        if teacher_fails:
            return None, TeacherUnavailable("the teacher is down", "connection")
        return T[rows[:, 0].astype(int)], None

    out = asyncio.run(finish_batch(joint, batch, SIZES, routed, ask, fallback))
    return np.asarray(routed.to_teacher), asked, out


@pytest.mark.parametrize(("fails", "fallback"), [(False, "student"), (True, "student"),
                                                 (True, "error"), (False, "error")])
def test_each_request_gets_its_rows_answered_by_whom_the_rules_say(fails, fallback):
    mask, asked, out = _step(fails, fallback)
    assert 0 < mask.sum() < 12  # the case has both kinds of rows
    assert asked == [np.flatnonzero(mask).tolist()]  # one call, the routed rows only
    assert len(out) == len(SIZES)
    start = 0
    for n, answer in zip(SIZES, out, strict=True):
        rows = range(start, start + n)
        hit = bool(mask[start:start + n].any())
        start += n
        if fails and fallback == "error" and hit:
            assert isinstance(answer, TeacherUnavailable)
            continue
        assert isinstance(answer, JointAnswer)
        for j, i in enumerate(rows):  # the rule, row by row
            teacher = mask[i] and not fails
            want = (T if teacher else S)[i].argmax()
            label = "teacher" if teacher else "student_fallback" if mask[i] else "student"
            assert answer.predictions[j] == want and answer.answered_by[j] == label
        assert answer.degraded == (fails and hit)
        assert sum(answer.counts().values()) == n


def test_no_routed_row_means_no_teacher_call():
    joint = JointModel(lambda b: S[: len(b)], None, "softmax", -np.inf)
    batch = np.zeros((5, 1))

    async def ask(rows):  # pragma: no cover - must not be called
        raise AssertionError("the teacher was asked for no rows")

    out = asyncio.run(finish_batch(joint, batch, [5], joint.route(batch), ask, "error"))
    assert out[0].answered_by.tolist() == ["student"] * 5 and not out[0].degraded


def test_a_model_failure_names_the_model_and_the_batch():
    err = model_failure("student", np.zeros((7, 8, 8)), RuntimeError("boom\nmore"))
    assert isinstance(err, ModelError) and err.model == "student"
    assert str(err) == ("the student model failed on a batch of 7 rows of shape [8, 8]: "
                        "RuntimeError: boom")
