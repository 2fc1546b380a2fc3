"""Statistics over seeds, one scheme for every table, figure and claim: the mean and its 95 %
Student-t interval (few seeds make the normal interval too narrow), differences of methods (paired
where runs share seeds, else Welch) and where such an interval lies against a rule's threshold.
docs/statistics.md explains the choices."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

CI_LEVEL = 0.95
CI_TEXT = ("mean ± half-width of the 95 % confidence interval of the mean over seeds (Student t with n − 1 "
           "degrees of freedom: few seeds make the normal interval too narrow); n = runs (seeds); "
           "n = 1: one run, no interval")
STAT_COLUMNS = ["n", "mean", "std", "ci95", "ci95_low", "ci95_high"]


def seed_stats(values) -> dict:
    """n, mean, sample std and the 95 % Student-t interval of the mean over seeds (NaN for n = 1)."""
    v = np.asarray(pd.Series(values).dropna(), dtype=float)
    n = len(v)
    if n == 0:
        return dict(n=0, mean=math.nan, std=math.nan, ci95=math.nan, ci95_low=math.nan, ci95_high=math.nan)
    mean = float(v.mean())
    if n == 1:
        return dict(n=1, mean=mean, std=math.nan, ci95=math.nan, ci95_low=math.nan, ci95_high=math.nan)
    std = float(v.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + CI_LEVEL / 2, n - 1)) * std / math.sqrt(n)
    return dict(n=n, mean=mean, std=std, ci95=half, ci95_low=mean - half, ci95_high=mean + half)


def t_interval(values) -> tuple[float, float]:
    """(low, high) of the 95 % t-interval: the error-bar function of the figures, same as the tables'."""
    s = seed_stats(values)
    return (s["mean"], s["mean"]) if s["n"] < 2 else (s["ci95_low"], s["ci95_high"])


def group_stats(runs: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """keys + n, mean, std, ci95 (half-width), ci95_low, ci95_high of `value` over each group's seeds."""
    if runs.empty:
        return pd.DataFrame(columns=keys + STAT_COLUMNS)
    rows = [dict(zip(keys, k if isinstance(k, tuple) else (k,))) | seed_stats(g[value])
            for k, g in runs.groupby(keys, sort=True)]
    return pd.DataFrame(rows, columns=keys + STAT_COLUMNS)


def cell_text(s, digits: int = 2) -> str:
    """'mean ± ci95 (n=k)' for a stats row (or dict)."""
    if s["n"] == 0 or pd.isna(s["mean"]):
        return "—"
    if s["n"] == 1 or pd.isna(s["ci95"]):
        return f"{s['mean']:.{digits}f} (n={int(s['n'])})"
    return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f} (n={int(s['n'])})"


def ordered(values, order) -> list:
    """Known values in the given order, then any others sorted: tables list methods the same way."""
    values = list(dict.fromkeys(values))
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


# ---------------------------------------------------------------- differences and decisions

@dataclass(frozen=True)
class Metric:
    """A metric a claim can judge, declared once: what it means, which way is better, and the worst
    value, which a diverged run (stopped at a non-finite or absurd loss) scores so that it counts
    against its method instead of dropping out of its cell."""
    name: str
    means: str
    better: str     # "lower" | "higher"
    worst: float


METRICS = {m.name: m for m in (
    Metric("test_error", "test error (%)", "lower", 100.0),
    Metric("val_error", "validation error (%)", "lower", 100.0),
    Metric("largest_length_solved", "largest sequence length the curriculum passed", "higher", 0.0),
    Metric("N_solved", "largest copy length N passed", "higher", 0.0),
    Metric("lag_solved", "longest dependency solved (time steps from input to output)", "higher", 0.0),
    # a diverged char-LM has no test bpc: it scores a uniform guess over the 256 byte values (8 bits),
    # worse than any model that learned the character frequencies (about 5 bits on English text)
    Metric("test_bpc", "test bits per character", "lower", 8.0),
    Metric("valid_bpc", "validation bits per character", "lower", 8.0),
    Metric("late_cosine", "SG-target cosine at the boundaries, last quarter of the run", "higher", -1.0),
    Metric("late_probe_cosine_exact", "SG cosine with the exact future gradient on probe streams, last quarter",
           "higher", -1.0),
    Metric("late_probe_cosine_discounted", "SG cosine with the discounted future gradient on probe streams, last "
           "quarter", "higher", -1.0),
    Metric("late_target_cosine", "char-LM SG-target cosine at the boundaries, last quarter", "higher", -1.0),
    Metric("signal_sg_cosine", "held-out cosine of the trained SG with the exact future gradient", "higher", -1.0),
    Metric("signal_linear_cosine", "held-out cosine of the best linear SG with the exact future gradient",
           "higher", -1.0),
    # reported beside R3, not judged: a diverged SG carries no usable signal, scored as an SG of norm 0
    Metric("late_norm_ratio", "SG norm / target norm at the boundaries, last quarter of the run", "higher", 0.0),
    Metric("samples_per_s", "training samples per second", "higher", 0.0),
    Metric("steps_per_s", "training steps per second", "higher", 0.0),
    Metric("time_to_target_s", "training seconds to the target test error", "lower", math.inf),
    Metric("iterations_to_target", "iterations to the target validation error", "lower", math.inf),
    Metric("seconds_to_target", "training seconds to the target validation error", "lower", math.inf),
    Metric("activation_memory_mb", "activation memory of one window update (MiB)", "lower", math.inf),
    Metric("step_ms", "milliseconds per window update", "lower", math.inf),
)}
WORST = {name: m.worst for name, m in METRICS.items()}


def scored(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`runs` with each diverged run's `metric` at the metric's worst value (METRICS): the one place
    tables and claims score a diverged seed, so that it stays in its cell."""
    if "status" not in runs or metric not in runs:
        return runs
    diverged = (runs["status"] == "diverged").to_numpy()
    if not diverged.any():
        return runs
    if metric not in WORST:
        raise ValueError(f"no worst value for a diverged run's {metric!r}; declare it in METRICS "
                         "(sgbench/analysis/stats.py)")
    return runs.assign(**{metric: runs[metric].astype(float).where(~diverged, WORST[metric])})


@dataclass(frozen=True)
class Estimate:
    """A mean (or a difference of means) with its standard error and Student-t degrees of freedom.
    exact: a number read from the paper (no seeds, no interval: compared as it stands)."""
    mean: float
    se: float = math.nan
    df: float = math.nan
    n: str = ""            # seeds behind it, as shown: "n=3", "n=3, paired", "n=2 vs 3"
    exact: bool = False
    seeds: int = 0         # seeds per method behind it (the smaller side): for seeds_to_decide

    @property
    def has_interval(self) -> bool:
        return self.exact or (math.isfinite(self.mean) and self.df >= 1 and math.isfinite(self.se))

    def interval(self) -> tuple[float, float]:
        """95 % interval (NaN, NaN) without one; (mean, mean) for an exact number."""
        if self.exact:
            return self.mean, self.mean
        if not self.has_interval:
            return math.nan, math.nan
        half = float(scipy_stats.t.ppf(0.5 + CI_LEVEL / 2, self.df)) * self.se
        return self.mean - half, self.mean + half

    def minus(self, other: "Estimate") -> "Estimate":
        """Difference of two independent estimates (Welch-Satterthwaite degrees of freedom)."""
        if self.exact and other.exact:
            return Estimate(self.mean - other.mean, exact=True)
        var = self.se ** 2 + other.se ** 2
        return Estimate(self.mean - other.mean, math.sqrt(var), _welch_df(self.se ** 2, self.df, other.se ** 2,
                                                                          other.df), f"{self.n}; {other.n}",
                        seeds=min(self.seeds, other.seeds))

    def text(self, digits: int = 2) -> str:
        if self.exact:
            return f"{self.mean:+.{digits}f}"
        low, high = self.interval()
        if math.isnan(low):
            return f"{self.mean:+.{digits}f} (no interval, {self.n})"
        return f"{self.mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] ({self.n})"


def _welch_df(v1: float, df1: float, v2: float, df2: float) -> float:
    if not (df1 >= 1 and df2 >= 1):
        return math.nan
    if v1 + v2 == 0:   # every seed identical on both sides: the pooled degrees of freedom
        return df1 + df2
    return (v1 + v2) ** 2 / (v1 ** 2 / df1 + v2 ** 2 / df2)


def _values(values) -> pd.Series:
    """Per-seed values as a float Series indexed by seed (NaN dropped)."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    return s.astype(float).dropna()


def mean_of(values, exact: bool = False) -> Estimate:
    """Mean over seeds with its t standard error (n - 1 degrees of freedom)."""
    v = _values(values)
    n = len(v)
    if exact:
        return Estimate(float(v.iloc[0]), exact=True)
    if n == 0:
        return Estimate(math.nan, n="n=0")
    if n == 1 or not np.isfinite(v).all():
        return Estimate(float(v.mean()), n=f"n={n}")
    return Estimate(float(v.mean()), float(v.std(ddof=1)) / math.sqrt(n), n - 1, f"n={n}", seeds=n)


def difference(a, b, exact: bool = False) -> Estimate:
    """mean(a) - mean(b) over seeds. Paired (t on the per-seed differences) when both hold the same
    seeds (>= 2): runs with the same seed share their initialisation and batch order, so pairing
    removes that shared noise. Otherwise Welch's unequal-variance interval."""
    a, b = _values(a), _values(b)
    if exact:
        return Estimate(float(a.iloc[0]) - float(b.iloc[0]), exact=True)
    if len(a) >= 2 and set(a.index) == set(b.index) and np.isfinite(a).all() and np.isfinite(b).all():
        d = a - b.reindex(a.index)
        est = mean_of(d)
        return Estimate(est.mean, est.se, est.df, f"n={len(d)}, paired", seeds=len(d))
    ea, eb, n = mean_of(a), mean_of(b), f"n={len(a)} vs {len(b)}"
    if ea.has_interval and eb.has_interval:
        w = ea.minus(eb)
        return Estimate(w.mean, w.se, w.df, n, seeds=min(len(a), len(b)))
    return Estimate(ea.mean - eb.mean, n=n)


# ---------------------------------------------------------------- decisions

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"
TOO_FEW_SEEDS = "too few seeds (a method with n < 2: no interval)"
BUDGET_TOO_SHORT = "budget too short"
OVERLAP = "the 95 % interval straddles the threshold"
SEED_CAP = 200  # seeds_to_decide looks no further
SIDES = ("<", "<=", ">", ">=", "within")


@dataclass(frozen=True)
class Decision:
    state: str              # holds | fails | undecided
    reason: str = ""        # why undecided
    margin: float = math.nan  # how far the interval clears the threshold (>= 0 when decided)


def decide(est: Estimate, side: str, threshold: float, drift: float = 0.0, still: str = "") -> Decision:
    """Where est's 95 % interval lies against `threshold` for the claim `est <side> threshold`
    ("within": |est| <= threshold). A decided cell whose interval clears the threshold by no more
    than `drift` (how far the compared difference moved over the last stretch of the runs: they were
    still improving) is undecided: budget too short, `still` naming who was still improving."""
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}; one of {SIDES}")
    if not est.has_interval:
        return Decision(UNDECIDED, TOO_FEW_SEEDS)
    low, high = est.interval()
    if side == "within":
        hold, fail = min(threshold - high, low + threshold), max(low - threshold, -threshold - high)
    elif side in ("<", "<="):
        hold, fail = threshold - high, low - threshold
    else:
        hold, fail = low - threshold, threshold - high
    strict = side in ("<", ">")
    if hold > 0 or (hold == 0 and not strict):
        state, margin = HOLDS, hold
    elif fail > 0 or (fail == 0 and strict):
        state, margin = FAILS, fail
    else:
        return Decision(UNDECIDED, overlap_reason(est, side, threshold))
    if drift > 0 and margin <= drift:
        return Decision(UNDECIDED, f"{BUDGET_TOO_SHORT}: {still} still improving at the end "
                                   f"(the compared difference could move {drift:.2f} more)")
    return Decision(state, "", margin)


def seeds_to_decide(est: Estimate, side: str, threshold: float, cap: int = SEED_CAP) -> int | None:
    """Seeds per method at which the 95 % interval would clear `threshold`, if the difference and the
    per-seed spread stayed as measured (a planning figure for a budget, not a promise: both move with
    more seeds); None when the estimate has no spread to project, sits on the threshold, or needs more
    than `cap`. The degrees of freedom grow in proportion to the seeds (paired: n - 1)."""
    if est.exact or not est.has_interval or est.seeds < 2:
        return None
    margin = abs(abs(est.mean) - threshold) if side == "within" else abs(est.mean - threshold)
    if margin == 0:
        return None
    sd = est.se * math.sqrt(est.seeds)
    for n in range(est.seeds + 1, cap + 1):
        df = est.df * (n - 1) / (est.seeds - 1)
        if float(scipy_stats.t.ppf(0.5 + CI_LEVEL / 2, df)) * sd / math.sqrt(n) < margin:
            return n
    return None


def overlap_reason(est: Estimate, side: str, threshold: float) -> str:
    """OVERLAP, with how many seeds would decide (seeds_to_decide)."""
    n = seeds_to_decide(est, side, threshold)
    return (f"{OVERLAP} (about {n} seeds would decide, at the measured difference and spread)" if n
            else f"{OVERLAP} (more than {SEED_CAP} seeds, or no spread to project: the difference sits on it)")
