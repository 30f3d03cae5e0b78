"""The live guarantee monitor: its e-process against a row-by-row product, its false-alarm
level under continuous monitoring by simulation (at the boundary, rate = eps), its power,
the coverage of its upper bound at every time at once, and the per-threshold certificates
against the closed form of a known population."""

import math

import numpy as np
import pytest
from scipy.stats import binom

from ebjr.calibration.monitor import AlarmPolicy, GuaranteeMonitor
from ebjr.exceptions import InputError


def stream(rng, n, rate, student_share=0.7, p=0.1):
    """One batch: the student answers ``student_share`` of the rows, and disagrees with the
    teacher on a share ``rate`` of all rows; a share ``p`` of its rows is shadowed."""
    student = rng.random(n) < student_share
    shadowed = student & (rng.random(n) < p)
    disagree = rng.random(n) < rate / student_share
    return student, shadowed, disagree


def at_most(k, runs, delta):
    """``k`` false alarms in ``runs`` is consistent with a level of ``delta`` (one-sided
    binomial test at 0.001)."""
    return binom.sf(k - 1, runs, delta) > 1e-3


def test_the_e_process_is_the_product_of_its_bets_row_by_row():
    rng = np.random.default_rng(1)
    mon = GuaranteeMonitor(eps=0.05, delta=0.1, min_shadow_prob=0.2)
    log_k, n, total, squares = 0.0, 0, 0.0, 0.0
    for _ in range(30):
        s, sh, d = stream(rng, 64, 0.08, p=0.2)
        x = np.where(s & sh & d, 5.0, 0.0)
        # the bet of this batch, from the rows before it (aGRAPA, shrunk to eps by 10 rows)
        mean = (total + 10 * 0.05) / (n + 10)
        var = (max(squares / n - (total / n) ** 2, 0.0) if n else 0.0) \
            + 0.05 * 0.95 * 10 / (n + 10)
        lam = min(max((mean - 0.05) / (var + (mean - 0.05) ** 2 + 1e-12), 0.0), 0.5 / 0.05)
        for xi in x:  # row by row
            log_k += math.log(1 + lam * (xi - 0.05))
        n, total, squares = n + 64, total + x.sum(), squares + (x ** 2).sum()
        mon.update(s, sh, d, 0.2)
        assert mon.e_value == pytest.approx(math.exp(log_k), rel=1e-9)
    assert mon.rows == 30 * 64 and mon.shadow_rows > 0


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_false_alarms_stay_below_delta_however_long_it_is_watched(p):
    """At the boundary (disagreement = eps), 400 runs of 100,000 rows read after every
    batch: the share of runs that ever alarm is at most delta. A binomial test repeated
    every batch, on the same streams, alarms far more often."""
    eps, delta, runs = 0.02, 0.1, 400
    rng = np.random.default_rng(2)
    alarms = naive = 0
    for _ in range(runs):
        mon = GuaranteeMonitor(eps=eps, delta=delta, min_shadow_prob=p)
        k = m = 0
        peeked = False
        for _ in range(50):
            s, sh, d = stream(rng, 2000, eps, p=p)
            mon.update(s, sh, d, p)
            k, m = k + int((s & sh & d).sum()), m + int((s & sh).sum())
            # the naive test: the shadowed rows' disagreement vs eps / student share
            peeked |= m > 0 and binom.sf(k - 1, m, eps / 0.7) < delta
        alarms += mon.alarm
        naive += peeked
    assert at_most(alarms, runs, delta), alarms
    assert naive > 2 * alarms and naive / runs > delta  # peeking breaks the naive test


def test_a_clear_violation_is_found_and_the_upper_bound_covers_at_every_time():
    eps, delta, runs = 0.02, 0.1, 200
    rng = np.random.default_rng(3)
    found, uncovered, delays = 0, 0, []
    for _ in range(runs):
        mon = GuaranteeMonitor(eps=eps, delta=delta, min_shadow_prob=0.1)
        ever_below = False
        for b in range(60):
            s, sh, d = stream(rng, 2000, 2.5 * eps)
            mon.update(s, sh, d, 0.1)
            ever_below |= mon.drop_upper < 2.5 * eps
            if mon.alarm and len(delays) < found + 1:
                delays.append(b + 1)
        found += mon.alarm
        uncovered += ever_below
    assert found == runs  # power: every run finds it within 120,000 rows
    assert np.median(delays) <= 30
    assert at_most(uncovered, runs, delta), uncovered


def test_the_alarm_latches_and_restart_starts_a_new_test():
    rng = np.random.default_rng(4)
    mon = GuaranteeMonitor(eps=0.02, delta=0.05, min_shadow_prob=0.1)
    while not mon.alarm:
        mon.update(*stream(rng, 2000, 0.1), 0.1)
    at = mon.alarmed_at
    for _ in range(20):  # the traffic recovers: the alarm stays, the bound comes down
        mon.update(*stream(rng, 2000, 0.0), 0.1)
    assert mon.alarm and mon.alarmed_at == at
    mon.restart()
    assert not mon.alarm and mon.e_value == 1.0
    assert mon.state()["rows"] == mon.rows and set(mon.state()) >= {
        "eps", "delta", "rows", "shadow_rows", "drop_upper", "alarm"}


def test_per_threshold_certificates_match_the_populations_closed_form():
    """Scores uniform on [0, 1]; the student disagrees with the teacher with probability
    0.3 (1 - score): at threshold g, the disagreement is the integral of that from g to 1,
    0.15 (1 - g)^2. The live threshold is 0.5; rows below it went to the teacher."""
    eps = 0.01
    grid = np.linspace(0.5, 1.0, 11)
    truth = 0.15 * (1 - grid) ** 2
    rng = np.random.default_rng(5)
    mon = GuaranteeMonitor(eps=eps, delta=0.05, min_shadow_prob=0.2, thresholds=grid)
    for _ in range(150):
        score = rng.random(4000)
        student = score >= 0.5
        shadowed = student & (rng.random(4000) < 0.2)
        disagree = rng.random(4000) < 0.3 * (1 - score)
        mon.update(student, shadowed, disagree, 0.2, scores=score)
    ok = mon.certified()
    assert not ok[truth > 2 * eps].any()  # clearly unsafe thresholds lose their certificate
    assert ok[truth < eps / 2].all()  # clearly safe ones keep it
    cheapest = mon.certified_threshold()
    assert 0.15 * (1 - cheapest) ** 2 <= 2 * eps
    assert mon.certified_threshold(at_least=0.95) == pytest.approx(0.95)
    assert mon.alarm  # the live threshold (0.5) serves 0.0375 > eps


def test_memory_does_not_grow_with_rows():
    rng = np.random.default_rng(6)
    mon = GuaranteeMonitor(eps=0.02, thresholds=[0.1, 0.5, 0.9])
    sizes = []
    for _ in range(3):
        for _ in range(50):
            score = rng.random(500)
            mon.update(score >= 0.5, np.zeros(500, bool), np.zeros(500, bool), 0.05,
                       scores=score)
        sizes.append(sum(np.asarray(v).nbytes for v in vars(mon).values()
                         if isinstance(v, np.ndarray)))
    assert sizes[0] == sizes[1] == sizes[2]


@pytest.mark.parametrize("kwargs, args, message", [
    ({"eps": 0.0}, None, "eps and delta must be in"),
    ({"eps": 0.02, "min_shadow_prob": 0.0}, None, "min_shadow_prob must be > 0"),
    ({"eps": 0.02}, ([True], [True, False], [False], 0.1), "one value per row"),
    ({"eps": 0.02}, ([False], [True], [False], 0.1), "the teacher answered cannot be shadowed"),
    ({"eps": 0.02}, ([True], [False], [False], 0.01), "shadow_prob must be in"),
    ({"eps": 0.02, "thresholds": [0.5]}, ([True], [False], [False], 0.1), "needs scores"),
])
def test_bad_input_is_refused_with_what_was_expected(kwargs, args, message):
    with pytest.raises(InputError, match=message):
        GuaranteeMonitor(**kwargs).update(*args) if args else GuaranteeMonitor(**kwargs)


def test_tighten_protects_after_a_shift_and_relaxes_as_certificates_come():
    """Before row 60,000 the live threshold 0.5 is safe (disagreement 0.0075 < eps); then
    the student gets worse (0.045). Tighten sends everything to the teacher on the alarm,
    then serves the cheapest threshold certified since, whose true post-shift
    disagreement is below eps."""
    eps, grid = 0.01, np.linspace(0.5, 1.0, 11)
    rng = np.random.default_rng(7)
    mon = GuaranteeMonitor(eps=eps, delta=0.05, min_shadow_prob=0.2,
                           thresholds=[*grid, math.inf])
    policy, served, moves = AlarmPolicy(mon, "tighten", floor=0.5), 0.5, []
    assert not mon.certified().any()  # nothing is certified without evidence
    for b in range(200):
        worse = b >= 15
        score = rng.random(4000)
        student = score >= served
        shadowed = student & (rng.random(4000) < 0.2)
        disagree = rng.random(4000) < (0.36 if worse else 0.06) * (1 - score)
        was = mon.alarm
        mon.update(student, shadowed, disagree, 0.2, scores=score)
        new = policy.next_threshold(served, mon.alarm and not was)
        if new is not None:
            moves.append((b, new))
            served = new
    assert moves[0][0] >= 15 and moves[0][1] == math.inf  # the alarm came after the shift
    assert 0.5 < served < math.inf  # then a certified threshold, cheaper than the teacher
    assert 0.18 * (1 - served) ** 2 <= eps  # truly safe after the shift


def test_the_teacher_policy_and_bad_policies():
    mon = GuaranteeMonitor(eps=0.02, min_shadow_prob=0.1)
    assert AlarmPolicy(mon, "teacher", 0.3).next_threshold(0.3, True) == math.inf
    assert AlarmPolicy(mon, "log", 0.3).next_threshold(0.3, True) is None
    with pytest.raises(InputError, match="on_alarm must be one of"):
        AlarmPolicy(mon, "panic", 0.3)
    with pytest.raises(InputError, match="needs a monitor with a threshold grid"):
        AlarmPolicy(mon, "tighten", 0.3)


def labelled(rng, n, q10, q01, p=0.1, share=0.7):
    """Labelled rows: the student answers ``share``; on its rows, it is wrong where the
    teacher is right with probability q10, and the other way round with q01 (the accuracy
    drop vs the teacher is share * (q10 - q01)); routed rows: the served answer is the
    teacher's."""
    student = rng.random(n) < share
    shadowed = student & (rng.random(n) < p)
    u = rng.random(n)
    teacher_wrong = rng.random(n) < 0.1
    jw = np.where(student, np.where(u < q10, True, np.where(u < q10 + q01, False,
                                                              teacher_wrong)), teacher_wrong)
    tw = np.where(student & (u < q10), False, np.where(student & (u >= q10) & (u < q10 + q01),
                                                       True, teacher_wrong))
    return student, shadowed, jw, tw


def test_labelled_feedback_tests_the_signed_loss_with_false_alarms_below_delta():
    eps, delta, runs = 0.02, 0.1, 300
    rng = np.random.default_rng(8)
    q10 = 0.06
    q01 = q10 - eps / 0.7  # the boundary: drop = eps
    alarms = uncovered = 0
    for _ in range(runs):
        mon = GuaranteeMonitor(eps=eps, delta=delta, min_shadow_prob=0.1)
        below = False
        for _ in range(40):
            mon.update_labels(*labelled(rng, 2000, q10, q01), 0.1)
            below |= mon.labelled_drop_upper < eps
        alarms += mon.labelled_alarm
        uncovered += below
    assert at_most(alarms, runs, delta) and at_most(uncovered, runs, delta)
    found = 0
    for _ in range(50):  # a clear violation: drop 0.063
        mon = GuaranteeMonitor(eps=eps, delta=delta, min_shadow_prob=0.1)
        for _ in range(40):
            mon.update_labels(*labelled(rng, 2000, 0.12, 0.03), 0.1)
        found += mon.labelled_alarm
    assert found == 50
    assert mon.state()["labelled"]["rows"] == 80_000
    with pytest.raises(InputError, match="must agree there"):
        mon.update_labels([False], [False], [True], [False], 0.1)
