"""A threshold whose accuracy drop is bounded with high probability (Learn-then-Test).

:class:`GuaranteedDrop` picks the threshold that sends the fewest inputs to
the teacher while guaranteeing, with probability at least ``1 - delta`` over
the draw of the calibration set, that on new inputs from the same
distribution the joint model's accuracy is at most ``eps`` below the
teacher's. The one assumption: calibration inputs and future traffic are
independent draws from the same distribution (exchangeable). Under
distribution shift nothing is guaranteed.

How (Angelopoulos, Bates et al., "Learn then Test", 2021): for each threshold
``t`` the null hypothesis "risk(t) > eps" is tested with a valid p-value,
thresholds are tested in a fixed order from the all-teacher end (``t = +inf``,
risk 0) towards sending more to the student, and testing stops at the first
threshold that cannot be rejected. The last rejected threshold is returned.
Fixed-sequence testing controls the family-wise error at ``delta`` without any
multiplicity correction, because an error needs the first false null of the
sequence to be rejected, and that one test has level ``delta``.

Losses (per input, at threshold ``t``, ``A = 1{student answers}``):

- ``"signed"`` (default): ``A * (1{teacher right} - 1{student right})``,
  in ``{-1, 0, 1}``; its mean is *exactly* the accuracy drop vs the teacher.
- ``"harm"``: ``A * 1{student wrong and teacher right}``; its mean bounds the
  drop from above, so it is more conservative.
- ``"disagreement"``: ``A * 1{student and teacher disagree}``; needs no
  labels (teacher outputs on unlabelled traffic suffice), bounds the drop
  from above, and is the most conservative.

Tests (``p_value``):

- ``"exact"`` (default): an exact test of the counts. For the signed loss,
  Tango's score statistic with a critical value calibrated so that the exact
  trinomial size is at most ``delta`` at every nuisance value
  (:mod:`ebjr.calibration.exact`); for the binary losses, the exact binomial test
  ``P(Binomial(n, eps) <= k)``. Both are exact for i.i.d. rows, so no valid
  test of the same counts can reject much more often; on the public pairs
  the signed exact test needs 4-10 % less teacher traffic than the betting
  bound.
- ``"wsr"``: the betting confidence bound of Waudby-Smith and
  Ramdas (JRSS-B 2024): a nonnegative supermartingale (the capital of a
  bettor who bets against the null with predictable, variance-adaptive stakes)
  whose running maximum gives a p-value by Ville's inequality. It adapts to the
  loss variance, which is small for the signed loss (most inputs have loss 0),
  and stays valid when the rows are examined one at a time (anytime-valid).
- ``"hb"``: Hoeffding-Bentkus (Bates et al., 2021), the classic choice; tight
  for Bernoulli losses with a small mean, loose for the signed loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import stats

from ebjr._options import LOSSES, P_VALUES
from ebjr._utils.validation import check_probability
from ebjr.calibration import Target, TradeoffCurve, need_correctness
from ebjr.calibration.exact import critical_value, exact_pvalue, tango_statistic
from ebjr.exceptions import InputError

__all__ = [
    "LOSSES",
    "P_VALUES",
    "GuaranteedDrop",
    "hoeffding_bentkus_pvalue",
    "loss_counts",
    "loss_matrix",
    "wsr_pvalue",
]


def hoeffding_bentkus_pvalue(mean: np.ndarray, n: int, level: float) -> np.ndarray:
    """p-value of the null "true mean > level" for ``n`` i.i.d. losses in ``[0, 1]``.

    ``min(exp(-n h(min(mean, level), level)), e * P(Binomial(n, level) <= ceil(n mean)))``
    with ``h(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))`` (Bates et al., 2021).

    Args:
        mean: empirical mean loss per hypothesis, any shape.
        n: number of samples.
        level: the null's boundary, in ``(0, 1)``.
    """
    r = np.minimum(np.asarray(mean, dtype=np.float64), level)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_term = np.where(r > 0, r * np.log(r / level), 0.0)
        b_term = np.where(r < 1, (1 - r) * np.log((1 - r) / (1 - level)), 0.0)
    hoeffding = np.exp(-n * (a_term + b_term))
    bentkus = math.e * stats.binom.cdf(np.ceil(n * np.asarray(mean) - 1e-9), n, level)
    return np.minimum(1.0, np.minimum(hoeffding, bentkus))


def wsr_pvalue(x: np.ndarray, level: float, delta: float, truncation: float = 0.5) -> np.ndarray:
    """Betting p-value of the null "true mean > level" for losses in ``[0, 1]``.

    Columns of ``x`` are separate hypotheses; rows are samples in a random
    order fixed before looking at the data. The bettor's capital
    ``K_i = prod_{j<=i} (1 - lambda_j (x_j - level))`` is a nonnegative
    supermartingale under the null for any predictable ``lambda_j`` in
    ``[0, 1/(1 - level))``, so ``P(max_i K_i >= 1/delta) <= delta`` (Ville)
    and ``1 / max_i K_i`` is a valid p-value. Stakes follow the
    predictable plug-in rule of Waudby-Smith and Ramdas:
    ``lambda_i = min(sqrt(2 log(1/delta) / (n var_{i-1})), truncation / (1 - level))``
    with running mean and variance estimates that start at 1/2 and 1/4.

    Args:
        x: losses in ``[0, 1]``, shape ``(n, k)``.
        level: the null's boundary.
        delta: the level the stakes are tuned for.
        truncation: largest stake as a share of the largest safe stake.

    Returns:
        p-values, shape ``(k,)``.
    """
    # one hypothesis per row, samples along the contiguous axis: cumsums run fast
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)
    n = x.shape[1]
    i = np.arange(1, n + 1, dtype=np.float64)
    mu = (0.5 + np.cumsum(x, axis=1)) / (i + 1)
    var = (0.25 + np.cumsum((x - mu) ** 2, axis=1)) / (i + 1)
    var_prev = np.empty_like(var)  # the stake for sample i uses samples before i only
    var_prev[:, 0] = 0.25
    var_prev[:, 1:] = var[:, :-1]
    lam = np.minimum(np.sqrt(2 * math.log(1 / delta) / (n * var_prev)), truncation / (1 - level))
    log_capital = np.cumsum(np.log1p(-lam * (x - level)), axis=1)
    best = np.maximum(0.0, log_capital.max(axis=1))
    return np.exp(-best)


def loss_matrix(curve: TradeoffCurve, loss: str, indices: np.ndarray,
                loss_range: tuple[float, float] | None = None) -> np.ndarray:
    """Per-sample losses at the curve points ``indices``, shape ``(n, len(indices))``.

    Rows are in the curve's sorted-score order; values as in the module docs
    (``signed`` in ``{-1, 0, 1}``, the others in ``{0, 1}``). For a curve of a
    per-sample quality (a loss, negated), ``loss_range`` states the range of the
    per-row loss; both models' losses are clipped to it and the signed loss is the
    increase of the student's loss over the teacher's, in ``[-(hi - lo), hi - lo]``.
    """
    if curve.quality != "accuracy" and loss_range is not None:
        if loss != "signed":
            raise InputError(f"a loss curve's guarantee controls the signed loss increase, "
                             f"got loss={loss!r}")
        sq, tq = curve.correctness("the guaranteed loss increase")
        if not (np.all(np.isfinite(sq)) and np.all(np.isfinite(tq))):
            raise InputError("the guarantee needs a quality per sample; this curve's quality "
                             f"{curve.quality!r} is a set-level metric")
        lo, hi = loss_range
        # quality = -loss: clip the losses to the stated range, then student minus teacher
        g = np.clip(-sq, lo, hi) - np.clip(-tq, lo, hi)
        rows = np.arange(curve.n)[:, None]
        return g[:, None] * (rows >= curve.n_teacher[indices][None, :])
    need_correctness(curve, "the guaranteed drop")
    if loss == "disagreement":
        g = (~curve.agree).astype(np.float64)
    else:
        if not curve.has_labels:
            raise InputError(
                f"the {loss!r} loss needs labels; without labels use loss='disagreement'"
            )
        sc, tc = curve.correctness(f"the {loss!r} loss")
        if loss == "signed":
            g = tc.astype(np.float64) - sc.astype(np.float64)
        elif loss == "harm":
            g = (tc & ~sc).astype(np.float64)
        else:
            raise InputError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    rows = np.arange(curve.n)[:, None]
    answers = rows >= curve.n_teacher[indices][None, :]  # the student answers these rows
    return g[:, None] * answers


def loss_counts(curve: TradeoffCurve, loss: str) -> tuple[np.ndarray, np.ndarray]:
    """Per curve point: how many rows the student answers with loss ``+1`` and with ``-1``.

    Binary losses have no ``-1``: the second array is then all zeros. Computed
    from suffix sums in ``O(n)`` for all points at once.
    """
    g = loss_matrix(curve, loss, np.array([0], dtype=np.int64))[:, 0]  # point 0: all answered
    # rows scored -inf never reach the student: point 0 already excludes them
    pos = np.concatenate([[0], np.cumsum(g > 0)])
    neg = np.concatenate([[0], np.cumsum(g < 0)])
    cut = curve.n_teacher
    return (pos[-1] - pos[cut]).astype(np.int64), (neg[-1] - neg[cut]).astype(np.int64)


@dataclass(frozen=True)
class GuaranteedDrop(Target):
    """Accuracy drop vs the teacher <= ``eps`` with probability >= ``1 - delta``.

    See the module documentation for the guarantee, its assumption, the losses
    and the tests.

    The router must not have been fitted on the calibration rows: a score
    chosen on the same data the test sees breaks the test's assumption, so a
    curve of a fitted ``auto`` router on its own fitting rows is refused.

    Args:
        eps: allowed accuracy drop (a fraction: 0.005 is half a point).
        delta: allowed probability that the guarantee fails.
        loss: ``"signed"``, ``"harm"`` or ``"disagreement"`` (label-free).
        p_value: ``"exact"`` (default), ``"wsr"`` or ``"hb"``.
        seed: seed of the sample order used by the betting p-value.
    """

    eps: float = 0.005
    delta: float = 0.05
    loss: str = "signed"
    p_value: str = "exact"
    seed: int = 0
    loss_range: tuple[float, float] | None = None
    kind: ClassVar[str] = "guaranteed_drop"
    block: ClassVar[int] = 256

    def __post_init__(self) -> None:
        check_probability(self.eps, "eps")
        check_probability(self.delta, "delta", open_low=True)
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.p_value not in P_VALUES:
            raise InputError(f"p_value must be one of {', '.join(P_VALUES)}, got {self.p_value!r}")
        if self.delta >= 1:
            raise InputError(f"delta must be below 1, got {self.delta}")
        if self.loss_range is not None:
            try:
                lo, hi = (float(v) for v in self.loss_range)
            except (TypeError, ValueError) as exc:
                raise InputError(f"loss_range must be (low, high), got {self.loss_range!r}"
                                 ) from exc
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise InputError(f"loss_range must be finite with low < high, got {(lo, hi)}")
            if self.p_value == "exact":
                raise InputError("a bounded loss has no exact test of counts: use "
                                 "p_value='wsr' (betting) or 'hb' with loss_range")
            object.__setattr__(self, "loss_range", (lo, hi))

    def drop_bound(self) -> float | None:
        return float(self.eps)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()  # every field, as the target registry's conformance asks
        d["loss_range"] = None if self.loss_range is None else list(self.loss_range)
        return d

    def _width(self) -> float:
        """Half the span of the signed loss: 1 for right/wrong rows, ``hi - lo`` for a loss."""
        return 1.0 if self.loss_range is None else self.loss_range[1] - self.loss_range[0]

    def _level(self) -> float:
        """The null's boundary on the ``[0, 1]`` scale the p-values work on."""
        r = self._width()
        return (r + self.eps) / (2.0 * r) if self.loss == "signed" else self.eps

    def _pvalues(self, curve: TradeoffCurve, idx: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Betting or Hoeffding-Bentkus p-values at the curve points ``idx``."""
        level = self._level()
        if level >= 1.0:
            return np.zeros(idx.shape[0])  # every loss is <= 1: the null is impossible
        if level <= 0.0:
            return np.ones(idx.shape[0])  # "mean > 0" can never be rejected
        losses = loss_matrix(curve, self.loss, idx, self.loss_range)
        r = self._width()  # map [-r, r] (the signed loss) to [0, 1]
        x = (losses + r) / (2.0 * r) if self.loss == "signed" else losses
        if self.p_value == "hb":
            return hoeffding_bentkus_pvalue(x.mean(axis=0), curve.n, level)
        return wsr_pvalue(x[order], level, self.delta)

    def _sequence_by_blocks(self, curve: TradeoffCurve) -> tuple[int, float, tuple | None, int]:
        """Fixed-sequence testing with p-values computed a block of points at a time."""
        last = len(curve) - 1
        order = np.random.default_rng(self.seed).permutation(curve.n)
        chosen, p_chosen, tested = last, 0.0, 0
        for hi in range(last - 1, -1, -self.block):
            idx = np.arange(hi, max(hi - self.block, -1), -1)
            p = self._pvalues(curve, idx, order)
            fail = np.flatnonzero(p > self.delta)
            if fail.size:
                j = int(fail[0])
                tested += j + 1
                if j > 0:
                    chosen, p_chosen = int(idx[j - 1]), float(p[j - 1])
                return chosen, p_chosen, (int(idx[j]), float(p[j])), tested
            tested += idx.size
            chosen, p_chosen = int(idx[-1]), float(p[-1])
        return chosen, p_chosen, None, tested

    def _sequence_exact(self, curve: TradeoffCurve) -> tuple[int, float, tuple | None, int, dict]:
        """Fixed-sequence testing with the exact tests, all points at once from the counts."""
        last = len(curve) - 1
        pos, neg = loss_counts(curve, self.loss)
        n = curve.n
        extra: dict[str, Any] = {}
        if self.loss == "signed":
            if self.eps >= 1.0:
                reject = np.ones(last + 1, dtype=bool)
            else:
                cal = critical_value(n, float(self.eps), float(self.delta))
                reject = tango_statistic(pos, neg, n, self.eps) <= -cal.z
                extra = {"critical_value": cal.z, "exact_size": cal.size}

            def pvalue(k: int) -> float:
                if self.eps >= 1.0:
                    return 0.0
                return exact_pvalue(int(pos[k]), int(neg[k]), n, float(self.eps))
        else:
            p_all = stats.binom.cdf(pos, n, self.eps) if self.eps < 1 else np.zeros(last + 1)
            reject = p_all <= self.delta

            def pvalue(k: int) -> float:
                return float(p_all[k])

        seq = np.arange(last - 1, -1, -1)  # from the all-teacher end towards the student
        fails = np.flatnonzero(~reject[seq])
        tested = int(fails[0]) + 1 if fails.size else seq.size
        if fails.size:
            j = int(fails[0])
            chosen = int(seq[j - 1]) if j > 0 else last
            stop = (int(seq[j]), pvalue(int(seq[j])))
        else:
            chosen, stop = (int(seq[-1]) if seq.size else last), None
        p_chosen = 0.0 if chosen == last else pvalue(chosen)
        return chosen, p_chosen, stop, tested, extra

    def select_index(self, curve: TradeoffCurve) -> tuple[int, dict[str, Any]]:
        if curve.quality != "accuracy" and self.loss_range is None:
            raise InputError(
                f"this curve's quality is {curve.quality!r}: a guarantee on a loss needs the "
                "range each row's loss lies in (it is clipped to it): GuaranteedDrop(eps, "
                "delta, p_value='wsr', loss_range=(low, high))"
            )
        if self.loss_range is None:
            need_correctness(curve, "the guaranteed drop")
        if curve.router_fit_rows:
            raise InputError(
                f"the guarantee needs a router chosen without the calibration rows, but "
                f"{curve.router_fit_rows} of this curve's {curve.n} rows were used to fit its "
                f"{curve.router.get('name', 'router')!r} router; fit the router on other rows "
                "(ebjr.calibrate_outputs with router='auto' splits them for you)"
            )
        extra: dict[str, Any] = {}
        if self.p_value == "exact":
            chosen, p_chosen, stop, tested, extra = self._sequence_exact(curve)
        else:
            chosen, p_chosen, stop, tested = self._sequence_by_blocks(curve)
        details: dict[str, Any] = {
            "p_value_at_threshold": p_chosen,
            "hypotheses_tested": tested,
            "calibration_drop": float(curve.teacher_accuracy - curve.accuracy[chosen])
            if curve.has_labels
            else None,
            "calibration_disagreement": float(1 - curve.agreement[chosen]),
            "assumption": "calibration data and traffic are i.i.d. from the same distribution",
            **extra,
        }
        if stop is not None:
            details["first_not_rejected"] = {
                "threshold": float(curve.threshold[stop[0]]),
                "p_value": stop[1],
            }
        return chosen, details
