"""Three-valued verdicts from cells: the machinery shared by the claims' rules (rules.py) and the
answers to the question (answers.py). Torch-free; docs/statistics.md explains the scheme."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis.stats import (
    FAILS,
    HOLDS,
    UNDECIDED,
    Decision,
    Estimate,
    decide,
    difference,
    mean_of,
    scored,
)

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive at this tier"
SUPPORTED, REFUTED = "supported", "refuted"
NO_CELL = "no cell"


@dataclass(frozen=True)
class Evidence:
    """One cell a rule compared: its key (shared with [DNI]'s cells), what was compared, the decision."""
    key: tuple
    label: str
    numbers: str
    estimate: Estimate | None
    decision: Decision

    @property
    def holds(self) -> bool:
        return self.decision.state == HOLDS


@dataclass(frozen=True)
class Check:
    verdict: str
    reason: str
    evidence: tuple[Evidence, ...]
    some: bool = False      # a claim that something happens in some cell (else: in every cell)

    def deciding(self) -> Evidence | None:
        """The cell behind the verdict. Every-cell claims: a failing one, else an undecided one, else the
        narrowest win. Some-cell claims: the clearest win, else an undecided one, else the narrowest loss."""
        def cells(state):
            return [e for e in self.evidence if e.decision.state == state]
        undecided = cells(UNDECIDED)
        if self.some:
            if cells(HOLDS):
                return max(cells(HOLDS), key=lambda e: e.decision.margin)
            return undecided[0] if undecided else min(cells(FAILS), key=lambda e: e.decision.margin, default=None)
        if cells(FAILS) or undecided:
            return (cells(FAILS) or undecided)[0]
        return min(cells(HOLDS), key=lambda e: e.decision.margin, default=None)


def every_cell(evidence: list[Evidence], missing: str, names=(REPRODUCED, CONTRADICTED)) -> Check:
    """A claim about every cell: yes when every cell holds, no when one fails, else inconclusive with
    the reasons of the undecided cells; no cell at all: inconclusive, `missing` says what is absent."""
    yes, no = names
    if not evidence:
        return Check(INCONCLUSIVE, f"{NO_CELL}: {missing}", ())
    states = [e.decision.state for e in evidence]
    if FAILS in states:
        return Check(no, "", tuple(evidence))
    if all(s == HOLDS for s in states):
        return Check(yes, "", tuple(evidence))
    return Check(INCONCLUSIVE, reasons(evidence), tuple(evidence))


def some_cell(evidence: list[Evidence], missing: str, names=(SUPPORTED, REFUTED)) -> Check:
    """A claim that something happens somewhere: yes when one cell holds, no when every cell fails."""
    yes, no = names
    if not evidence:
        return Check(INCONCLUSIVE, f"{NO_CELL}: {missing}", (), some=True)
    states = [e.decision.state for e in evidence]
    if HOLDS in states:
        return Check(yes, "", tuple(evidence), some=True)
    if all(s == FAILS for s in states):
        return Check(no, "", tuple(evidence), some=True)
    return Check(INCONCLUSIVE, reasons(evidence), tuple(evidence), some=True)


def reasons(evidence) -> str:
    """Why the undecided cells are undecided, each reason once with the cells it applies to."""
    cells: dict[str, list[str]] = {}
    for e in evidence:
        if e.decision.state == UNDECIDED:
            cells.setdefault(e.decision.reason, []).append(e.label)
    return "; ".join(f"{reason} ({', '.join(labels)})" for reason, labels in cells.items())


# ---------------------------------------------------------------- per-seed values

def seed_values(runs: pd.DataFrame, metric: str) -> pd.Series:
    """The metric per seed; a diverged run scores the metric's worst value (analysis.stats.scored), so
    it counts against its method rather than dropping out."""
    values = scored(runs, metric)[metric].astype(float)
    return pd.Series(values.to_numpy(), index=runs["seed"].to_numpy())


def diverged_count(runs: pd.DataFrame) -> int:
    return int((runs["status"] == "diverged").sum()) if "status" in runs else 0


def summary(runs: pd.DataFrame, metric: str, exact: bool, digits: int = 2) -> str:
    """'mean ± ci (n=k)' with the diverged runs named; a paper number as it stands."""
    v = seed_values(runs, metric)
    if exact:
        return f"{v.iloc[0]:g}"
    low, high = mean_of(v).interval()
    est = mean_of(v)
    text = (f"{est.mean:.{digits}f} (n={len(v)})" if math.isnan(low)
            else f"{est.mean:.{digits}f} ± {(high - low) / 2:.{digits}f} (n={len(v)})")
    bad = diverged_count(runs)
    return text + (f", {bad} diverged" if bad else "")


def drift(groups: dict[str, pd.DataFrame]) -> tuple[float, str]:
    """How far the compared methods were still improving: the sum over them of the mean fall of
    their error over the last stretch of the run (column late_drop, analysis.tables.late_drop; 0
    when not logged), and the names of those whose error still fell."""
    total, still = 0.0, []
    for name, runs in groups.items():
        if "late_drop" not in runs:
            continue
        fall = runs["late_drop"].astype(float).dropna().mean()
        if fall == fall and fall > 0:
            total += fall
            still.append(name)
    return total, ", ".join(still)


def compare(key, label, a: pd.DataFrame, b: pd.DataFrame, metric: str, side: str, threshold: float,
            exact: bool, names=("a", "b"), improving=True, extra: str = "") -> Evidence:
    """mean(a) - mean(b) of `metric` against `threshold`, as one cell's evidence."""
    est = difference(seed_values(a, metric), seed_values(b, metric), exact)
    d, still = drift({names[0]: a, names[1]: b}) if improving and not exact else (0.0, "")
    numbers = (f"{names[0]} {summary(a, metric, exact)} vs {names[1]} {summary(b, metric, exact)}; "
               f"difference {est.text()}{extra}")
    return Evidence(key, label, numbers, est, decide(est, side, threshold, d, still))



def never_text(values: pd.Series) -> str:
    """'k/n within budget' for a time to target (∞: that seed never reached it)."""
    return f"{int((values < math.inf).sum())}/{len(values)} within budget"


def time_summary(values: pd.Series) -> str:
    """A method's seconds to a target: 'mean ± ci s' over seeds, or ∞ when a seed never reached it."""
    if (values == math.inf).any():
        return f"∞ ({never_text(values)})"
    est = mean_of(values)
    low, high = est.interval()
    spread = "" if math.isnan(low) else f" ± {(high - low) / 2:.1f}"
    return f"{est.mean:.1f}{spread} s ({never_text(values)})"


def compare_ratio(key, label, a: pd.DataFrame, b: pd.DataFrame, metric: str, side: str, threshold: float,
                  names=("a", "b")) -> Evidence:
    """mean(a) / mean(b) of a time to target (seconds or iterations) against `threshold`, as one cell's
    evidence. The ratio is the geometric mean over seeds (the difference of the log times: paired over
    shared seeds, else Welch) with its 95 % interval, so a time ten times shorter weighs as much as one ten
    times longer. A seed that never reached the target within the budget is ∞, a result, never dropped:
    a method with such a seed is slower than one that reached it in every seed (decided, margin ∞)."""
    va, vb = seed_values(a, metric), seed_values(b, metric)
    never_a, never_b = bool((va == math.inf).any()), bool((vb == math.inf).any())
    head = f"{names[0]} {time_summary(va)} vs {names[1]} {time_summary(vb)}"
    if never_a or never_b:
        if never_a and never_b:
            return Evidence(key, label, f"{head}; ratio undefined", None,
                            Decision(UNDECIDED, "both methods missed the target in some seed"))
        slower = side in (">", ">=")          # the claim: a takes longer than b
        state = HOLDS if never_a == slower else FAILS
        return Evidence(key, label, f"{head}; ratio {'∞' if never_a else '0'}", None, Decision(state, "", math.inf))
    est = difference(np.log(va), np.log(vb))
    low, high = est.interval()
    interval = "no interval" if math.isnan(low) else f"{math.exp(low):.2f}×, {math.exp(high):.2f}×"
    numbers = f"{head}; ratio {math.exp(est.mean):.2f}× [{interval}] ({est.n}; geometric mean over seeds)"
    return Evidence(key, label, numbers, est, decide(est, side, math.log(threshold)))
