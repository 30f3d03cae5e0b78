"""The guarantee, watched in production: an anytime-valid test that the drop stays within eps.

The offline guarantee (:mod:`ebjr.calibration.guarantee`) holds for traffic like
the calibration rows. :class:`GuaranteeMonitor` watches the traffic itself. Its
quantity is the joint model's *disagreement with the teacher*: the share of
rows the student answered with another class than the teacher's. That bounds
the accuracy drop against the teacher, and it needs no labels.

On rows the teacher answered, the disagreement is 0. A row the student answered
is *shadowed* (sent to the teacher as well, off the response path) with a
known probability ``p``. Then ``X = shadowed * disagree / p`` has mean equal to
the disagreement rate (inverse-probability weighting) and lies in
``[0, 1 / p_min]``.

**The alarm** tests ``H0: E[X] <= eps`` with a betting e-process,
``K_t = prod (1 + lam_i (X_i - eps))``. The bets ``lam_i`` are predictable: they
are fixed from the rows seen before each batch, by the aGRAPA rule of
Waudby-Smith & Ramdas (2023), clipped to ``[0, 1/(2 eps)]``. Under ``H0``,
``K_t`` is a non-negative supermartingale, so by Ville's inequality
``P(ever K_t >= 1/delta) <= delta``. The alarm is raised the first time that
happens and then stays raised: its false-alarm probability is at most ``delta``
*however long it runs and however often it is read*. A binomial test repeated
every 1,000 rows has no such bound.

**The upper bound** ``drop_upper`` comes from the same kind of bets against
``E[X] >= m``, for each ``m`` of a fixed grid. A grid point, once rejected,
stays rejected. ``drop_upper`` is the grid point just above the largest one
never rejected, which is a confidence sequence. With probability at least
``1 - delta``, the disagreement rate is below ``drop_upper`` at every time at
once.

**Per-threshold evidence**: given each row's router score (and whether it went
to the teacher), two e-processes are kept for every threshold of a fixed grid.
A row routed at the live threshold has a known teacher answer, so it counts
exactly (``p = 1``) for every grid threshold. A row the student answered counts
through its shadow. The first e-process is an alarm, as above, one per
threshold. The second bets *against* ``E[X] >= eps`` and *certifies* a threshold
once it reaches ``1/delta``. Thresholds are certified in order from the highest
down (fixed-sequence testing), so with probability at least ``1 - delta`` no
certified threshold is above eps. The cheapest certified threshold is where a
``tighten`` policy moves. After an alarm the grid starts again
(:meth:`GuaranteeMonitor.restart` with ``grid=True``), because the rows before
it no longer speak for the traffic now.

**Labels that arrive later** (:meth:`GuaranteeMonitor.update_labels`) feed a second
test of the same kind on the signed loss ``joint wrong - teacher wrong`` (the quantity
the offline guarantee certifies): 0 on rows the teacher answered, ``(jw - tw) / p`` on
shadowed rows, in ``[-1/p_min, 1/p_min]``, with its own alarm and upper bound.

Memory is fixed: a few sums per grid point, whatever the number of rows.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> mon = GuaranteeMonitor(eps=0.02, delta=0.05, min_shadow_prob=0.1)
>>> for _ in range(200):           # 200 batches of 500 rows: 6 % disagreement, p = 0.1
...     student = rng.random(500) < 0.7
...     shadowed = student & (rng.random(500) < 0.1)
...     mon.update(student, shadowed, rng.random(500) < 0.06 / 0.7, 0.1)
>>> mon.alarm, mon.drop_upper > 0.06 > 0.02
(True, True)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ebjr._utils.validation import check_probability
from ebjr.calibration.shadow_plan import ShadowPlan
from ebjr.exceptions import InputError

__all__ = ["POLICIES", "AlarmPolicy", "GuaranteeMonitor", "LiveGuarantee"]

log = logging.getLogger("ebjr.monitor")

#: what to do when the monitor alarms
POLICIES = ("log", "tighten", "teacher")

#: bets are at most this share of the largest bet that keeps the wealth non-negative
_CLIP = 0.5
#: prior pseudo-rows for the running mean and variance the bets are made from
_PRIOR_ROWS = 10.0


def _grid(eps: float, signed: bool = False) -> np.ndarray:
    """The values the upper bound can take: fine near eps (a drop, ``signed``, may also be
    negative: the joint model better than the teacher)."""
    lo = -min(1.0, 4 * eps) if signed else 0.0
    fine = np.linspace(lo, min(1.0, 4 * eps), 161 if not signed else 321)[1:]
    coarse = np.linspace(min(1.0, 4 * eps), 1.0, 97)[1:]
    below = np.linspace(-1.0, lo, 41)[:-1] if signed else np.empty(0)
    return np.unique(np.concatenate([below, fine, coarse]))


def _upper(bets: _Bets) -> float:
    """The grid point just above the largest never rejected (the confidence sequence's
    upper end)."""
    grid, out = bets.c, bets.rejected
    kept = np.flatnonzero(~out)
    if kept.size == 0:
        return float(grid[0])
    i = int(kept[-1]) + 1
    return 1.0 if i >= grid.size else float(grid[i])


class _Bets:
    """Betting e-processes on one stream of ``X`` in ``[lo, bound]``, for several nulls at
    once: ``E[X] <= c`` (``side=+1``: wealth grows when X is large) or ``E[X] >= c``
    (``side=-1``), one per value of ``c``. Bets by aGRAPA from the running mean and
    variance of the stream, fixed per batch (predictable)."""

    def __init__(self, centers: np.ndarray, side: int, bound: float, delta: float,
                 lo: float = 0.0) -> None:
        self.c = np.asarray(centers, dtype=np.float64)
        self.side = side
        self.bound = bound
        self.lo = lo
        self.log_cap = math.log(1.0 / delta)
        self.log_wealth = np.zeros_like(self.c)
        self.rejected = np.zeros(self.c.shape, dtype=bool)

    def bets(self, mean: float, var: float) -> np.ndarray:
        gap = self.side * (mean - self.c)  # > 0: evidence against the null so far
        lam = np.clip(gap / (var + gap ** 2 + 1e-12), 0.0, None)
        # the largest bet that keeps 1 + lam * side * (X - c) >= 0 for every X in [lo, bound]
        worst = self.c - self.lo if self.side > 0 else self.bound - self.c
        return np.minimum(lam, _CLIP / np.maximum(worst, 1e-12))

    def update(self, x_terms: Any, mean: Any, var: Any) -> None:
        """``x_terms(lam)`` returns ``sum(log(1 + lam side (X - c)))`` per center for the
        batch; the bets come from the rows before it (``mean``, ``var``)."""
        self.log_wealth += x_terms(self.bets(mean, var))
        self.rejected |= self.log_wealth >= self.log_cap


class GuaranteeMonitor:
    """An anytime-valid monitor of the joint model's disagreement with the teacher (see the
    module documentation).

    Args:
        eps: the disagreement (accuracy-drop bound) the guarantee promises.
        delta: the probability of ever raising a false alarm.
        min_shadow_prob: the smallest shadow probability any row will have (it bounds
            the weighted terms, ``1 / min_shadow_prob``).
        thresholds: a grid of thresholds to keep certificates for (optional; then
            :meth:`update` needs the rows' ``scores``).

    Attributes:
        rows, shadow_rows, teacher_rows: rows seen, shadowed, answered by the teacher.
    """

    def __init__(self, eps: float, delta: float = 0.05, *, min_shadow_prob: float = 0.05,
                 thresholds: Sequence[float] | None = None) -> None:
        self.eps = check_probability(eps, "eps")
        self.delta = check_probability(delta, "delta")
        if not 0.0 < self.eps < 1.0 or not 0.0 < self.delta < 1.0:
            raise InputError(f"eps and delta must be in (0, 1), got eps={eps!r}, "
                             f"delta={delta!r}")
        p = check_probability(min_shadow_prob, "min_shadow_prob")
        if p <= 0.0:
            raise InputError("min_shadow_prob must be > 0: rows the student answers are seen "
                             "only through their shadows")
        self.min_shadow_prob = p
        self.bound = 1.0 / p
        grid = None if thresholds is None else np.sort(np.asarray(thresholds, np.float64))
        if grid is not None and (grid.ndim != 1 or grid.size == 0 or np.isnan(grid).any()):
            raise InputError(f"thresholds must be a non-empty list of numbers (not NaN), got "
                             f"{thresholds!r}")
        self.thresholds = grid
        self._alarm = _Bets(np.array([self.eps]), +1, self.bound, self.delta)
        self._upper = _Bets(_grid(self.eps), -1, self.bound, self.delta)
        self._per_threshold: _Bets | None = None  # alarms per grid threshold
        self._safe: _Bets | None = None  # certificates per grid threshold
        self._grid_stats: np.ndarray | None = None
        if grid is not None:
            self._restart_grid()
        self._stats = np.zeros(3)  # rows, sum X, sum X^2 of the served stream
        self.rows = self.shadow_rows = self.teacher_rows = 0
        self.alarmed_at: int | None = None  # rows seen when the alarm was first raised
        self._restart_labels()
        self.labelled_rows = 0

    # ------------------------------------------------------------ reading
    @property
    def alarm(self) -> bool:
        """True once the evidence says the disagreement exceeds eps (stays True)."""
        return bool(self._alarm.rejected[0])

    @property
    def e_value(self) -> float:
        """The alarm's current wealth (the alarm fires at ``1 / delta``)."""
        return float(math.exp(self._alarm.log_wealth[0]))

    @property
    def drop_upper(self) -> float:
        """An upper confidence bound of the disagreement rate, valid at every time at once."""
        return _upper(self._upper)

    @property
    def labelled_alarm(self) -> bool:
        """True once labelled rows say the accuracy drop vs the teacher exceeds eps."""
        return bool(self._label_alarm.rejected[0])

    @property
    def labelled_drop_upper(self) -> float:
        """An upper confidence bound of the accuracy drop vs the teacher, from labelled rows
        (valid at every time at once)."""
        return _upper(self._label_upper)

    def alarmed(self) -> np.ndarray:
        """Per grid threshold, whether the evidence says its disagreement exceeds eps."""
        if self._per_threshold is None:
            raise InputError("this monitor keeps no threshold grid (thresholds=None)")
        return self._per_threshold.rejected.copy()

    def certified(self) -> np.ndarray:
        """Per grid threshold, whether it is certified: the evidence since the grid's last
        restart says its disagreement is below eps. Tested in order from the highest
        threshold down, stopping at the first that is not (fixed-sequence testing: with
        probability at least ``1 - delta`` no certified threshold is above eps)."""
        if self._safe is None:
            raise InputError("this monitor keeps no threshold grid (thresholds=None)")
        ok = self._safe.rejected & ~self._per_threshold.rejected  # type: ignore[union-attr]
        top = np.flatnonzero(~ok[::-1])  # the first failure, counted from the top
        out = np.zeros_like(ok)
        keep = ok.size if top.size == 0 else int(top[0])
        if keep:
            out[ok.size - keep:] = True
        return out

    def certified_threshold(self, at_least: float = -math.inf) -> float | None:
        """The cheapest certified grid threshold ``>= at_least`` (``None``: none is)."""
        if self.thresholds is None:
            return None
        ok = np.flatnonzero(self.certified() & (self.thresholds >= at_least))
        return None if ok.size == 0 else float(self.thresholds[ok[0]])

    def state(self) -> dict[str, Any]:
        """What ``GET /v2/models/{name}/guarantee`` shows."""
        return {"eps": self.eps, "delta": self.delta, "rows": self.rows,
                "shadow_rows": self.shadow_rows, "teacher_rows": self.teacher_rows,
                "drop_upper": self.drop_upper, "alarm": self.alarm,
                "e_value": self.e_value, "alarmed_at_row": self.alarmed_at,
                "labelled": {"rows": self.labelled_rows,
                             "drop_upper": self.labelled_drop_upper,
                             "alarm": self.labelled_alarm,
                             "e_value": float(math.exp(self._label_alarm.log_wealth[0]))}}

    def update_labels(self, student_answered: Any, shadowed: Any, joint_wrong: Any,
                      teacher_wrong: Any, shadow_prob: Any) -> None:
        """Add served rows whose labels arrived: the signed loss ``joint wrong - teacher
        wrong`` (the offline guarantee's), known where the teacher's answer is: the rows
        it answered (where it is 0) and the shadowed rows (weighted by ``1 / p``). The
        labelled rows must be chosen without looking at them (e.g. every request, or a
        random share). The alarm is raised once the evidence says the accuracy drop vs
        the teacher exceeds eps.

        Args:
            student_answered, shadowed, shadow_prob: as for :meth:`update`.
            joint_wrong: per row, whether the served answer is wrong.
            teacher_wrong: per row, whether the teacher's answer is wrong, where known.
        """
        s = np.asarray(student_answered, dtype=bool).reshape(-1)
        n = s.size
        sh = np.asarray(shadowed, dtype=bool).reshape(-1)
        jw = np.asarray(joint_wrong, dtype=bool).reshape(-1)
        tw = np.asarray(teacher_wrong, dtype=bool).reshape(-1)
        p = np.broadcast_to(np.asarray(shadow_prob, dtype=np.float64), (n,))
        if not sh.size == jw.size == tw.size == n:
            raise InputError("student_answered, shadowed, joint_wrong and teacher_wrong must "
                             f"have one value per row; got {n}, {sh.size}, {jw.size}, {tw.size}")
        if (sh & ~s).any():
            raise InputError("a row the teacher answered cannot be shadowed")
        if (~s & (jw != tw)).any():
            raise InputError("on a row the teacher answered, the served answer is the "
                             "teacher's: joint_wrong and teacher_wrong must agree there")
        if np.isnan(p).any() or (s & (p < self.min_shadow_prob - 1e-12)).any() or (p > 1).any():
            raise InputError(f"shadow_prob must be in [min_shadow_prob={self.min_shadow_prob}, "
                             "1] for every row the student answered")
        if n == 0:
            return
        w = 1.0 / np.maximum(p, self.min_shadow_prob)
        x = np.where(s & sh, (jw.astype(np.float64) - tw) * w, 0.0)
        mean, var = self._moments(self._label_stats)
        self._label_alarm.update(_terms(x[:, None], +1, self._label_alarm.c), mean, var)
        self._label_upper.update(_terms(x[:, None], -1, self._label_upper.c), mean, var)
        self._label_stats += (n, x.sum(), (x ** 2).sum())
        self.labelled_rows += n

    def _restart_labels(self) -> None:
        b = self.bound
        self._label_alarm = _Bets(np.array([self.eps]), +1, b, self.delta, lo=-b)
        self._label_upper = _Bets(_grid(self.eps, signed=True), -1, b, self.delta, lo=-b)
        self._label_stats = np.zeros(3)

    # ------------------------------------------------------------ feeding
    def update(self, student_answered: Any, shadowed: Any, disagree: Any,
               shadow_prob: Any, *, scores: Any = None) -> None:
        """Add one batch of served rows.

        Args:
            student_answered: per row, whether the student answered it (else the teacher).
            shadowed: per row, whether the teacher also answered it off the response path
                (only rows the student answered can be shadowed).
            disagree: per row, whether the student's class differs from the teacher's,
                where the teacher's is known (routed or shadowed rows; ignored elsewhere).
            shadow_prob: per row (or one number), the probability it was shadowed, at least
                ``min_shadow_prob`` for every row the student answered.
            scores: per row, the router's score (needed for the threshold grid).
        """
        s = np.asarray(student_answered, dtype=bool).reshape(-1)
        n = s.size
        sh = np.asarray(shadowed, dtype=bool).reshape(-1)
        d = np.asarray(disagree, dtype=bool).reshape(-1)
        p = np.broadcast_to(np.asarray(shadow_prob, dtype=np.float64), (n,))
        if sh.size != n or d.size != n:
            raise InputError(f"student_answered, shadowed and disagree must have one value per "
                             f"row; got {n}, {sh.size} and {d.size}")
        if (sh & ~s).any():
            raise InputError("a row the teacher answered cannot be shadowed")
        if np.isnan(p).any() or (s & (p < self.min_shadow_prob - 1e-12)).any() or (p > 1).any():
            raise InputError(f"shadow_prob must be in [min_shadow_prob={self.min_shadow_prob}, "
                             "1] for every row the student answered")
        if n == 0:
            return
        x = np.where(s & sh & d, 1.0 / np.maximum(p, self.min_shadow_prob), 0.0)
        mean, var = self._moments(self._stats)
        self._alarm.update(_terms(x[:, None], +1, self._alarm.c), mean, var)
        self._upper.update(_terms(x[:, None], -1, self._upper.c), mean, var)
        self._stats += (n, x.sum(), (x ** 2).sum())
        if self._per_threshold is not None:
            self._update_grid(s, sh, d, p, scores)
        self.rows += n
        self.shadow_rows += int(sh.sum())
        self.teacher_rows += int((~s).sum())
        if self.alarm and self.alarmed_at is None:
            self.alarmed_at = self.rows

    def _update_grid(self, s, sh, d, p, scores) -> None:
        if scores is None:
            raise InputError("this monitor keeps a threshold grid: update() needs scores")
        sc = np.asarray(scores, dtype=np.float64).reshape(-1)
        if sc.size != s.size:
            raise InputError(f"scores has {sc.size} values for {s.size} rows")
        grid = self.thresholds
        assert grid is not None and self._per_threshold is not None and self._grid_stats is not None
        # the teacher's answer is known for routed rows (weight 1) and shadowed rows (1/p)
        w = np.where(~s, 1.0, np.where(sh, 1.0 / np.maximum(p, self.min_shadow_prob), 0.0))
        # at grid threshold g the student answers the rows with score >= g (NaN: the teacher)
        answers = sc[:, None] >= grid[None, :]  # (n, G)
        x = np.where(answers & d[:, None], w[:, None], 0.0)
        mean, var = self._moments(self._grid_stats)
        self._per_threshold.update(_terms(x, +1, self._per_threshold.c), mean, var)
        assert self._safe is not None
        self._safe.update(_terms(x, -1, self._safe.c), mean, var)
        self._grid_stats += np.stack([np.full(grid.size, float(s.size)), x.sum(axis=0),
                                      (x ** 2).sum(axis=0)])

    def restart(self, grid: bool = False) -> None:
        """Start the live test (and the labelled one) again, after a policy changed the
        served threshold: a new test of the model now served, of level ``delta`` again.
        With ``grid``, the grid's alarms and certificates start again too (after an alarm
        the rows before it no longer speak for the traffic now). The upper bound keeps its
        evidence."""
        self._alarm = _Bets(np.array([self.eps]), +1, self.bound, self.delta)
        self._stats = np.zeros(3)
        self.alarmed_at = None
        self._restart_labels()
        if grid and self.thresholds is not None:
            self._restart_grid()

    def _restart_grid(self) -> None:
        assert self.thresholds is not None
        g = self.thresholds.size
        self._per_threshold = _Bets(np.full(g, self.eps), +1, self.bound, self.delta)
        self._safe = _Bets(np.full(g, self.eps), -1, self.bound, self.delta)
        self._grid_stats = np.zeros((3, g))

    def _moments(self, stats: np.ndarray) -> tuple[Any, Any]:
        """The running mean and variance the next bets are made from (per column), shrunk
        towards eps by :data:`_PRIOR_ROWS` pseudo-rows."""
        n, total, squares = stats
        seen = np.maximum(n, 1.0)
        mean = (total + _PRIOR_ROWS * self.eps) / (n + _PRIOR_ROWS)
        var = np.maximum(squares / seen - (total / seen) ** 2, 0.0)
        return mean, var + self.eps * (1 - self.eps) * _PRIOR_ROWS / (n + _PRIOR_ROWS)

    def __repr__(self) -> str:
        return (f"GuaranteeMonitor(eps={self.eps}, delta={self.delta}, rows={self.rows}, "
                f"drop_upper={self.drop_upper:.4g}, alarm={self.alarm})")


def _terms(x: np.ndarray, side: int, centers: np.ndarray) -> Any:
    """``lam -> sum over rows of log(1 + lam side (x - c))`` per center ``c``: ``x`` is
    ``(n, 1)`` (one stream, every center) or ``(n, G)`` (one stream per center). The terms
    take few distinct values (0, and ``1/p`` for each shadow probability), so they are
    summed per value: the cost does not grow with the rows times the centers."""
    values = np.unique(x)
    counts = np.stack([(x == v).sum(axis=0) for v in values], axis=-1)  # (1 or G, V)

    def terms(lam: np.ndarray) -> np.ndarray:
        steps = np.log1p(lam[:, None] * side * (values[None, :] - centers[:, None]))  # (C, V)
        return (counts * steps).sum(axis=-1)

    return terms


class AlarmPolicy:
    """What to serve after each batch the monitor has seen, by policy (``on_alarm``):

    - ``log``: nothing changes;
    - ``teacher``: on the alarm, every row to the teacher (``+inf``);
    - ``tighten``: on the alarm, the grid starts again, and from then on the cheapest
      grid threshold certified since, never below ``floor`` (the calibrated one); every
      row to the teacher until one is.

    :meth:`next_threshold` returns the threshold to serve, or ``None`` to keep it; a move
    that answers an alarm restarts the live test (a new test of the threshold now served).
    """

    def __init__(self, monitor: GuaranteeMonitor, policy: str, floor: float) -> None:
        if policy not in POLICIES:
            raise InputError(f"on_alarm must be one of {', '.join(POLICIES)}, got {policy!r}")
        if policy == "tighten" and monitor.thresholds is None:
            raise InputError("the tighten policy needs a monitor with a threshold grid")
        self.monitor, self.policy, self.floor = monitor, policy, float(floor)
        self.protecting = False

    def next_threshold(self, served: float, alarm_raised: bool) -> float | None:
        """After an update: the threshold to serve now (``None``: keep ``served``)."""
        m = self.monitor
        if alarm_raised and self.policy == "teacher":
            m.restart()
            return math.inf
        if alarm_raised and self.policy == "tighten":
            m.restart(grid=True)
            self.protecting = True
            return m.certified_threshold(at_least=self.floor) or math.inf
        if self.protecting:
            best = m.certified_threshold(at_least=self.floor)
            if best is not None and best < served:
                return best  # certified since the alarm: the live test goes on
        return None


class LiveGuarantee:
    """A monitor, its alarm policy and the record of what they did: what a server keeps
    (``ebjr serve`` in its process; on Ray, the control deployment, fed by every replica).

    :meth:`feed` takes one batch of served rows and returns the threshold to serve from
    now on (``None``: keep the one served); every alarm and every move is logged and kept
    in :attr:`actions`.
    """

    def __init__(self, monitor: GuaranteeMonitor, policy: str, floor: float,
                 plan: ShadowPlan | float) -> None:
        self.monitor = monitor
        self.policy = AlarmPolicy(monitor, policy, floor)
        self.plan = plan if isinstance(plan, ShadowPlan) else ShadowPlan(plan)
        self.actions: list[dict[str, Any]] = []
        self.left_out: dict[str, int] = {}  # batches left out of the monitor, by reason

    def feed(self, served: float, student: Any, shadowed: Any, disagree: Any,
             scores: Any = None, shadow_prob: Any = None) -> float | None:
        """One batch of served rows (``shadow_prob`` per row: by default the plan's
        ``rate``, as a uniform plan samples)."""
        m = self.monitor
        was = m.alarm
        m.update(student, shadowed, disagree, self._prob(shadow_prob), scores=scores)
        return self._after(served, m.alarm and not was, m.alarmed_at, m.drop_upper)

    def feed_labels(self, served: float, student: Any, shadowed: Any, joint_wrong: Any,
                    teacher_wrong: Any, shadow_prob: Any = None) -> float | None:
        """Rows whose labels arrived (:meth:`GuaranteeMonitor.update_labels`); a labelled
        alarm is acted on as the live one is."""
        m = self.monitor
        was = m.labelled_alarm
        m.update_labels(student, shadowed, joint_wrong, teacher_wrong,
                        self._prob(shadow_prob))
        return self._after(served, m.labelled_alarm and not was, m.rows,
                           m.labelled_drop_upper)

    def _after(self, served: float, raised: bool, at: int | None, upper: float
               ) -> float | None:
        m = self.monitor
        new = self.policy.next_threshold(served, raised)
        moved = new is not None and new != served
        if raised or moved:
            after = new if moved else served
            self.actions.append({"at_row": at if raised else m.rows,
                                 "policy": self.policy.policy if raised else "certified",
                                 "threshold_before": served, "threshold_after": after,
                                 "drop_upper": upper})
            if raised:
                log.warning("guarantee alarm: the disagreement with the teacher exceeds "
                            "eps=%g (upper bound %.4g after %s rows); policy %r: threshold "
                            "%r -> %r", m.eps, upper, at, self.policy.policy, served, after)
            else:
                log.warning("guarantee: threshold %r certified since the alarm (after %d "
                            "rows); serving it instead of %r", after, m.rows, served)
        return new if moved else None

    def _prob(self, shadow_prob: Any) -> Any:
        return self.plan.rate if shadow_prob is None else shadow_prob

    def leave_out(self, why: str) -> None:
        """A batch was left out of the monitor (its shadows could not go)."""
        self.left_out[why] = self.left_out.get(why, 0) + 1

    def state(self, served: float) -> dict[str, Any]:
        """What ``GET /v2/models/{name}/guarantee`` answers."""
        m = self.monitor
        grid = [] if m.thresholds is None else [
            {"threshold": float(t), "certified": bool(c), "alarmed": bool(a)}
            for t, c, a in zip(m.thresholds, m.certified(), m.alarmed(), strict=True)]
        return {**m.state(), "alarm": m.alarm or bool(self.actions), "live_alarm": m.alarm,
                **self.plan.describe(),
                "shadow_band_top": (None if self.plan.near_rate is None
                                    else self.plan.band_top(served)),
                "threshold": served,
                "certified_threshold": m.certified_threshold(at_least=served), "grid": grid,
                "batches_left_out": sum(self.left_out.values()),
                "left_out_by_reason": dict(self.left_out), "on_alarm": self.policy.policy,
                "actions": list(self.actions)}
