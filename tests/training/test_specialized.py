import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

from ebjr.calibration import MaxDrop, curve_from_scores, select_threshold
from ebjr.calibration.guarantee import GuaranteedDrop
from ebjr.exceptions import InputError
from ebjr.joint import JointModel
from ebjr.routing import get_router, teacher_mask
from ebjr.scores import specialized_free_energy
from ebjr.training.specialized import ClassMap, top_classes


@given(st.lists(st.integers(0, 30), min_size=3, max_size=12), st.data())
def test_top_classes_by_brute_force(counts, data):
    k = data.draw(st.integers(1, len(counts) - 1))
    expected = sorted(range(len(counts)), key=lambda c: (-counts[c], c))[:k]
    assert top_classes(np.array(counts), k).tolist() == expected


def test_class_map_round_trip_and_rejections():
    rng = np.random.default_rng(0)
    y = rng.choice(10, size=2000, p=np.array([30, 1, 20, 1, 1, 15, 1, 1, 1, 29]) / 100)
    cmap = ClassMap.from_labels(y, n_top=3, n_classes=10)
    assert cmap.top.tolist() == [0, 9, 2] and cmap.other_index == 3
    s = cmap.to_student(y)
    kept = np.isin(y, cmap.top)
    np.testing.assert_array_equal(cmap.to_teacher(s[kept]), y[kept])  # exact round trip
    assert np.all(s[~kept] == cmap.other_index)
    assert cmap.joint_class_map() == [0, 9, 2, -1]
    with pytest.raises(InputError, match=r"labels must lie in \[0, 10\)"):
        cmap.to_student(np.array([1, 10]))
    with pytest.raises(InputError, match="the 'other' class \\(3\\) has no teacher label"):
        cmap.to_teacher(np.array([3]))
    with pytest.raises(InputError, match="must not repeat"):
        ClassMap(np.array([1, 1]), 10)
    with pytest.raises(InputError, match=r"n_top must be an integer in \[1, 9\]"):
        top_classes(np.ones(10), 10)


def test_specialized_energy_excludes_other():
    x = np.random.default_rng(1).normal(size=(50, 5)) * 3
    for other in (4, -1, 0):
        keep = [j for j in range(5) if j != other % 5]
        np.testing.assert_allclose(
            specialized_free_energy(x, other), -scipy.special.logsumexp(x[:, keep], axis=1)
        )
    with pytest.raises(InputError, match=r"other_index must be an integer in \[-"):
        specialized_free_energy(x, 7)


def direct_eq16(logits, threshold, other):
    """Eq. 16 written out: the student answers iff -F over real classes >= t and its argmax
    is not 'other'."""
    keep = [j for j in range(logits.shape[1]) if j != other]
    neg_f = scipy.special.logsumexp(logits[:, keep], axis=1)
    answers = (neg_f >= threshold) & (logits.argmax(1) != other)
    return ~answers


def test_router_follows_eq16_exactly():
    x = np.random.default_rng(2).normal(size=(400, 6)) * 2
    router = get_router("specialized", other_index=5)
    score = router.score(x)
    assert np.all(score[x.argmax(1) == 5] == -np.inf)
    for t in [-np.inf, -5.0, 0.0, 1.5, 2.5, 4.0, np.inf]:
        np.testing.assert_array_equal(router.route(x, t), direct_eq16(x, t, 5))


@given(st.integers(0, 2**31), st.integers(2, 80))
@settings(max_examples=100, deadline=None)
def test_curve_with_forced_rows_equals_brute_force(seed, n):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=n), 1)
    scores[rng.random(n) < 0.3] = -np.inf  # "other" rows
    y = rng.integers(0, 3, n)
    ps = np.where(rng.random(n) < 0.7, y, rng.integers(0, 3, n))
    pt = np.where(rng.random(n) < 0.9, y, rng.integers(0, 3, n))
    curve = curve_from_scores(scores, ps, pt, y)
    forced = scores == -np.inf
    assert curve.teacher_fraction[0] == pytest.approx(forced.mean())
    for i in range(len(curve)):
        teacher = (scores < curve.threshold[i]) | forced
        joint = np.where(teacher, pt, ps)
        assert curve.teacher_fraction[i] == pytest.approx(teacher.mean())
        assert curve.accuracy[i] == pytest.approx(np.mean(joint == y))
    # targets and the guarantee never hand an 'other' row to the student
    for target in (MaxDrop(0.05), GuaranteedDrop(0.05, 0.1)):
        sel = select_threshold(curve, target)
        assert teacher_mask(scores, sel.threshold)[forced].all()
        assert sel.point.teacher_fraction >= forced.mean() - 1e-12


def test_joint_model_maps_specialized_answers_into_teacher_space():
    cmap = ClassMap(np.array([7, 2]), n_classes=10)  # student: 0 -> 7, 1 -> 2, 2 = other
    s = np.array([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0], [0.1, 0.0, 0.0]])
    t = np.eye(10)[[1, 1, 4, 5]] * 9.0
    joint = JointModel(
        lambda b: s[b],
        lambda b: t[b],
        get_router("specialized"),
        3.0,
        class_map=cmap.joint_class_map(),
    )
    out = joint.predict(np.arange(4))
    # confident rows answered by the student in teacher labels; 'other' and unsure rows by T
    assert out.answered_by.tolist() == ["student", "student", "teacher", "teacher"]
    assert out.predictions.tolist() == [7, 2, 4, 5]
    assert out.probabilities.shape == (4, 10)
    with pytest.raises(InputError, match="other_index must be an integer"):
        get_router("specialized", other_index="last")
