import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import given
from hypothesis import strategies as st

from ebjr import routing as routers
from ebjr.exceptions import InputError, LogProbabilityInputError, UnknownRouterError
from ebjr.routing import get_router, list_routers, router_from_spec

PLAIN = [n for n in list_routers() if n != "auto"]


@pytest.fixture
def logits():
    return np.random.default_rng(0).normal(size=(40, 6)) * 3


@pytest.mark.parametrize("name", PLAIN)
def test_conformance(name, logits):
    """Every registered router obeys the same contract."""
    r = get_router(name)
    s = r.score(logits)
    # scores are finite, or -inf for rows that must go to the teacher (specialized 'other')
    assert s.shape == (40,) and not np.any(np.isnan(s)) and not np.any(s == np.inf)
    finite = s[np.isfinite(s)]
    assert finite.size > 20
    for t in [float(np.median(finite)), float(finite.min()), float(finite.max()) + 1]:
        mask = get_router(name).route(logits, t)
        assert mask.dtype == bool and mask.shape == (40,)
        if name != "random":  # random draws fresh numbers on each call
            np.testing.assert_array_equal(mask, (s < t) | (s == -np.inf))
    np.testing.assert_array_equal(get_router(name).route(logits, -np.inf), s == -np.inf)
    assert get_router(name).route(logits, np.inf).all()
    # spec round trip rebuilds an equal router
    assert router_from_spec(r.to_spec()) == r
    # torch in, torch out, same values
    if name != "random":
        st = r.score(torch.tensor(logits))
        assert isinstance(st, torch.Tensor)
        np.testing.assert_allclose(st.numpy(), s, rtol=1e-10)  # -inf == -inf passes too
    with pytest.raises(InputError, match="NaN"):
        r.score(np.array([[np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(InputError, match="threshold must be a real number"):
        r.route(logits, float("nan"))


def test_higher_score_means_student_fit():
    confident = np.array([[10.0, 0.0, 0.0]])
    unsure = np.array([[0.1, 0.0, 0.05]])
    for name in ["energy", "softmax", "entropy", "maxlogit", "margin", "paper_code"]:
        r = get_router(name)
        assert r.score(confident)[0] > r.score(unsure)[0], name


def test_energy_score_is_minus_free_energy_in_paper_units():
    x = np.array([[12.0, 0.0], [1.0, 0.5]])
    s = get_router("energy").score(x)
    np.testing.assert_allclose(s, scipy.special.logsumexp(x, axis=1))
    # student answers iff -F >= t
    np.testing.assert_array_equal(get_router("energy").route(x, 12.0), [False, True])


def test_unknown_router_lists_names():
    with pytest.raises(UnknownRouterError, match="registered routers are: auto, detection_energy"):
        get_router("enrgy")
    with pytest.raises(KeyError):  # subclasses KeyError for existing except clauses
        get_router("nope")


def test_bad_router_params():
    with pytest.raises(InputError, match="bad parameters for router 'softmax'"):
        get_router("softmax", temperature=2.0)
    with pytest.raises(InputError, match="temperature must be a positive"):
        get_router("energy", temperature=0)
    with pytest.raises(InputError, match="seed must be an integer"):
        get_router("random", seed=0.5)


def test_energy_refuses_log_probabilities_with_a_clear_message(logits):
    logp = scipy.special.log_softmax(logits, axis=1)
    with pytest.raises(LogProbabilityInputError, match="these are log-probabilities"):
        get_router("energy").score(logp)
    with pytest.raises(LogProbabilityInputError, match="'softmax', 'entropy' or 'margin'"):
        get_router("energy", temperature=2.0).route(logp, 0.0)
    # routers that are meaningful on probabilities accept them
    np.testing.assert_allclose(
        get_router("softmax").score(logp), get_router("softmax").score(logits)
    )


def test_random_router_is_seeded_and_its_threshold_is_the_fraction():
    x = np.zeros((20000, 3))
    a = get_router("random", seed=3).score(x)
    b = get_router("random", seed=3).score(x)
    np.testing.assert_array_equal(a, b)
    assert abs(get_router("random", seed=1).route(x, 0.3).mean() - 0.3) < 0.02


def test_register_rejects_duplicates():
    class Dup(routers.Router):
        name = "energy"

    with pytest.raises(ValueError, match="already registered"):
        routers.register_router(Dup)


def test_list_routers_wildcard():
    assert list_routers("*max*") == ["maxlogit", "softmax"]


@given(
    values=st.lists(st.one_of(st.floats(allow_nan=False, width=32), st.just(-np.inf),
                              st.just(np.nan)),
                    min_size=1, max_size=30),
    threshold=st.one_of(st.floats(allow_nan=False),
                        st.sampled_from([np.inf, -np.inf, -1e300, 1e300, 3.5e38, -3.5e38])),
    dtype=st.sampled_from([np.float32, np.float64]),
    as_torch=st.booleans(),
)
def test_teacher_mask_is_below_the_threshold_minus_inf_or_nan(values, threshold, dtype, as_torch):
    """The one-comparison mask equals its definition, on both namespaces and float widths."""
    from ebjr.routing import teacher_mask

    s = np.asarray(values, dtype=dtype)
    s = s[~np.isposinf(s)]  # scores are finite, -inf or NaN (a broken score)
    if s.size == 0:
        return
    a = torch.from_numpy(s) if as_torch else s
    with np.errstate(over="ignore"):  # a float32 compare with 1e300 overflows in the cast
        # the definition, in the namespace's compare: NaN goes on (fail safe)
        want = (a < threshold) | (a == -np.inf) | (a != a)
    np.testing.assert_array_equal(np.asarray(teacher_mask(a, threshold)), np.asarray(want))
    ints = teacher_mask(np.array([3, 1, 2]), 2)  # a custom router's integer scores
    np.testing.assert_array_equal(ints, [False, True, False])


def test_a_nan_score_goes_to_the_teacher_at_any_threshold():
    """Live routing fails safe: a router whose score is NaN sends the row on, even at a
    threshold of -inf (where every real score stays with the student)."""
    from ebjr.joint import JointModel

    class Broken(routers.Router):
        name = "broken_for_test"

        def _score(self, logits):
            out = logits[:, 0].copy()
            out[::2] = np.nan
            return out

    student = lambda b: np.tile([[2.0, 1.0, 0.0]], (len(b), 1))  # noqa: E731
    teacher = lambda b: np.tile([[0.0, 0.0, 5.0]], (len(b), 1))  # noqa: E731
    for threshold in (-np.inf, -1e300, 0.0, np.inf):
        out = JointModel(student, teacher, Broken(), threshold).predict(np.zeros((6, 2)))
        assert np.asarray(out.to_teacher)[::2].all()
        assert (np.asarray(out.predictions)[::2] == 2).all()


def test_params_are_read_from_the_constructor_so_equality_cannot_drift():
    """scikit-learn's get_params: every constructor argument is in the spec; two routers
    built differently are different (AutoRouter(candidates=..., teacher_cost=10) used to
    equal AutoRouter())."""
    from ebjr.calibration.auto import AutoRouter

    assert AutoRouter(candidates=[{"name": "energy"}], teacher_cost=10) != AutoRouter()
    assert AutoRouter(teacher_cost=10) == AutoRouter(teacher_cost=10)
    assert set(AutoRouter().params()) == {"target", "candidates", "cv", "seed",
                                          "student_cost", "teacher_cost"}
    for name in list_routers() + list_routers(kind="detections"):
        if name == "auto":
            continue
        r = get_router(name)
        assert router_from_spec(r.to_spec()) == r and r.is_fitted and not r.requires_fit
    assert AutoRouter.requires_fit and not AutoRouter().is_fitted

    class Forgetful(routers.Router):
        name = "forgetful_for_test"

        def __init__(self, width: int = 3) -> None:
            self.w = width

        def _score(self, logits):  # pragma: no cover - never scored
            return logits[:, 0]

    with pytest.raises(TypeError, match="must store its constructor argument 'width'"):
        Forgetful().params()
