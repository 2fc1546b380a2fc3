"""Statistics over seeds, one scheme for every table, figure and claim: the mean and its 95 %
Student-t interval (few seeds make the normal interval too narrow)."""
from __future__ import annotations

import math

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
