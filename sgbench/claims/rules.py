"""The paper's claims and their verdict rules (sgbench/claims/render.py writes the report).

Each claim has one rule, written here in code and printed in the report in words. A rule
compares means over seeds cell by cell (a cell: one data set / net / depth, or one task / T);
the report shows each mean with its 95 % t-interval beside it, so a reader sees how close a call
was. The same rule is also applied to [DNI]'s own numbers (sgbench/reference.yaml), which shows
whether the rule is a fair reading of the paper.

Verdicts: "reproduced" when the rule holds at every cell the tier measured, "not reproduced"
when it fails at one or more, "not measured at this tier" when no cell has what it compares.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from ..analysis.stats import cell_text, group_stats
from ..analysis.tables import LATE_FRACTION, net_label
from ..catalog import TABLE1_METHODS, UNLOCK_METHODS
from ..families.feedforward.tables import FF_CELL
from ..families.parallel.tables import CELL, speed_stats, variant_label
from ..families.parallel.tables import _pm as pm

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured at this tier"

# Tolerances of the rules (points of test error, or cosine), stated with each rule in the report.
F2_MAX_GAP = 2.5        # |DNI - backprop| on MNIST
F3_SLACK = 0.5          # cDNI may trail DNI by this much (seed noise and the paper's rounding)
U1_MAX_GAP = 3.0        # best complete-unlock method vs backprop on MNIST
A1_MAX_LOSS = 5.0       # error added by updating layers with probability p <= A1_MAX_P
A1_MAX_P = 0.5          # "well below 1"
R3_MIN_COSINE = 0.0     # late cosine between SG and its target must exceed this: aligned, not random (0)
RNN_CLAIM_METRICS = ("largest_length_solved", "N_solved", "late_cosine", "late_norm_ratio")


# ---------------------------------------------------------------- measurements

@dataclass(frozen=True)
class Measured:
    """Stats per cell: ff (test error by data set/net/depth/method/update_prob), rnn (per task/method/T/metric),
    par (throughput and time to target by data set/net/depth/method/workers: sgbench.speed_stats)."""
    ff: pd.DataFrame
    rnn: pd.DataFrame
    par: pd.DataFrame


def measured_from_runs(ff_runs: pd.DataFrame, rnn_runs: pd.DataFrame, par_runs: pd.DataFrame | None = None) -> Measured:
    ff = group_stats(ff_runs, FF_CELL + ["method", "update_prob"], "test_error")
    rnn = pd.concat([group_stats(rnn_runs, ["task", "method", "T"], metric).assign(metric=metric)
                     for metric in RNN_CLAIM_METRICS], ignore_index=True)
    return Measured(ff, rnn, speed_stats(pd.DataFrame() if par_runs is None else par_runs))


def measured_from_paper(reference: dict) -> Measured:
    """[DNI]'s tables in the same shape (n and interval unknown: NaN)."""
    nan = math.nan
    ff = [{"dataset": r["dataset"], "arch": r["arch"], "layers": r["layers"], "method": m, "update_prob": 1.0,
           "n": nan, "mean": float(r[m]), "std": nan, "ci95": nan, "ci95_low": nan, "ci95_high": nan}
          for r in reference["table1"]["rows"] for m in TABLE1_METHODS]
    rnn = []
    for r in reference["rnn_largest_length"]["rows"]:
        for key, value in ((k, v) for k, v in r.items() if k.startswith("T")):
            metrics = ["largest_length_solved"] + (["N_solved"] if r["task"] == "copy" else [])
            rnn += [{"task": r["task"], "method": r["method"], "T": int(key[1:]), "metric": metric, "n": nan,
                     "mean": float(value), "std": nan, "ci95": nan, "ci95_low": nan, "ci95_high": nan}
                    for metric in metrics]
    return Measured(pd.DataFrame(ff), pd.DataFrame(rnn), speed_stats(pd.DataFrame()))  # no wall-clock numbers


def base_dataset(name: str) -> str:
    """cifar10-jpeg is compared with [DNI]'s cifar10 (and labelled as the JPEG copy)."""
    return name.split("-")[0]


def value_text(row) -> str:
    if row is None:
        return "—"
    return f"{row['mean']:g}" if pd.isna(row["n"]) else cell_text(row)


# ---------------------------------------------------------------- evidence and checks

@dataclass(frozen=True)
class Evidence:
    """One cell a rule compared: its key (shared with [DNI]'s cells), the numbers, and the slack left."""
    key: tuple
    label: str
    numbers: str
    margin: float
    holds: bool


@dataclass(frozen=True)
class Check:
    verdict: str
    evidence: tuple[Evidence, ...]

    def deciding(self) -> Evidence | None:
        """The cell that decided the verdict: the first failing one, else the one with least slack."""
        failing = [e for e in self.evidence if not e.holds]
        return (failing or sorted(self.evidence, key=lambda e: e.margin) or [None])[0]


def finish(evidence: list[Evidence]) -> Check:
    if not evidence:
        return Check(NOT_MEASURED, ())
    return Check(REPRODUCED if all(e.holds for e in evidence) else NOT_REPRODUCED, tuple(evidence))


def ff_cells(ff: pd.DataFrame, update_prob: float = 1.0) -> dict[tuple, dict[str, dict]]:
    """{(base data set, arch, layers): {method: stats row}} at one update probability."""
    cells: dict[tuple, dict[str, dict]] = {}
    for row in ff[ff["update_prob"] == update_prob].to_dict("records"):
        key = (base_dataset(row["dataset"]), row["arch"], int(row["layers"]))
        cells.setdefault(key, {"_label": net_label(row)})
        cells[key][row["method"]] = row
    return cells


def rnn_cells(rnn: pd.DataFrame, metric: str) -> dict[tuple, dict[str, dict]]:
    cells: dict[tuple, dict[str, dict]] = {}
    for row in rnn[rnn["metric"] == metric].to_dict("records"):
        key = (row["task"], int(row["T"]))
        cells.setdefault(key, {"_label": f"{row['task']} T = {int(row['T'])}"})
        cells[key][row["method"]] = row
    return cells


def check_f1(m: Measured) -> Check:
    """DNI and cDNI each below No Bprop (mean test error), in every cell measured with No Bprop."""
    ev = []
    for key, rows in ff_cells(m.ff).items():
        for method in ("dni", "cdni"):
            if "no_bprop" in rows and method in rows:
                margin = rows["no_bprop"]["mean"] - rows[method]["mean"]
                ev.append(Evidence(key + (method,), f"{rows['_label']}, {method}",
                                   f"{method} {value_text(rows[method])} vs no_bprop {value_text(rows['no_bprop'])}",
                                   margin, margin > 0))
    return finish(ev)


def check_f2(m: Measured) -> Check:
    """On MNIST, |DNI - backprop| and |cDNI - backprop| <= F2_MAX_GAP points in every cell measured."""
    ev = []
    for key, rows in ff_cells(m.ff).items():
        for method in ("dni", "cdni"):
            if key[0] == "mnist" and "backprop" in rows and method in rows:
                gap = rows[method]["mean"] - rows["backprop"]["mean"]
                ev.append(Evidence(key + (method,), f"{rows['_label']}, {method}",
                                   f"{method} {value_text(rows[method])} vs backprop {value_text(rows['backprop'])}"
                                   f" (gap {gap:+.2f})", F2_MAX_GAP - abs(gap), abs(gap) <= F2_MAX_GAP))
    return finish(ev)


def check_f3(m: Measured) -> Check:
    """At depth >= 4, cDNI <= DNI + F3_SLACK points in every cell measured with both."""
    ev = []
    for key, rows in ff_cells(m.ff).items():
        if key[2] >= 4 and "dni" in rows and "cdni" in rows:
            margin = rows["dni"]["mean"] + F3_SLACK - rows["cdni"]["mean"]
            ev.append(Evidence(key, rows["_label"], f"cdni {value_text(rows['cdni'])} vs dni {value_text(rows['dni'])}",
                               margin, margin >= 0))
    return finish(ev)


def check_f4(m: Measured) -> Check:
    """For each FCN data set with >= 2 depths measured: the DNI - backprop gap is larger at the deepest
    depth than at the shallowest."""
    gaps: dict[tuple, list] = {}
    for key, rows in ff_cells(m.ff).items():
        if key[1] == "fcn" and "dni" in rows and "backprop" in rows:
            gap = rows["dni"]["mean"] - rows["backprop"]["mean"]
            gaps.setdefault(key[:2], []).append((key[2], gap, rows))
    ev = []
    for key, depths in gaps.items():
        if len(depths) >= 2:
            (d0, g0, r0), (d1, g1, r1) = min(depths, key=lambda d: d[0]), max(depths, key=lambda d: d[0])
            ev.append(Evidence(key, f"{r0['dni']['dataset']} FCN-{d0} → FCN-{d1}",
                               f"gap {g0:+.2f} (dni {value_text(r0['dni'])}, backprop "
                               f"{value_text(r0['backprop'])}) → {g1:+.2f} (dni {value_text(r1['dni'])}, backprop "
                               f"{value_text(r1['backprop'])})",
                               g1 - g0, g1 > g0))
    return finish(ev)


def check_r1(m: Measured) -> Check:
    """DNI's mean largest length solved > BPTT's, at every (task, T) measured with both; ratio reported."""
    ev = []
    for key, rows in rnn_cells(m.rnn, "largest_length_solved").items():
        if "dni" in rows and "bptt" in rows:
            dni, bptt = rows["dni"]["mean"], rows["bptt"]["mean"]
            ratio = (f"{dni / bptt:.1f}×" if bptt > 0 else "∞, BPTT solved none" if dni > 0
                     else "none: neither solved a level")
            ev.append(Evidence(key, rows["_label"], f"dni {value_text(rows['dni'])} vs bptt "
                               f"{value_text(rows['bptt'])} (ratio {ratio})", dni - bptt, dni > bptt))
    return finish(ev)


def check_r2(m: Measured) -> Check:
    """DNI+Aux's mean largest length solved >= DNI's, at every (task, T) measured with both."""
    ev = []
    for key, rows in rnn_cells(m.rnn, "largest_length_solved").items():
        if "dni" in rows and "dni_aux" in rows:
            margin = rows["dni_aux"]["mean"] - rows["dni"]["mean"]
            ev.append(Evidence(key, rows["_label"], f"dni_aux {value_text(rows['dni_aux'])} vs dni "
                               f"{value_text(rows['dni'])}", margin, margin >= 0))
    return finish(ev)


def check_r3(m: Measured) -> Check:
    """Copy task, every T measured with DNI: (a) mean N solved + 1 > T - 1 (the first input is needed N + 1
    steps later; a window of T steps holds lags of at most T - 1, so every such dependency crosses a
    boundary) and (b) the late SG/true-gradient cosine, mean over seeds, > R3_MIN_COSINE."""
    solved, cosine = rnn_cells(m.rnn, "N_solved"), rnn_cells(m.rnn, "late_cosine")
    ratio = rnn_cells(m.rnn, "late_norm_ratio")
    ev = []
    for key, rows in solved.items():
        cos = cosine.get(key, {}).get("dni")
        if key[0] != "copy" or "dni" not in rows or cos is None or pd.isna(cos["mean"]):
            continue
        lag, window_lag = rows["dni"]["mean"] + 1, key[1] - 1
        norm = ratio.get(key, {}).get("dni")
        ev.append(Evidence(key, rows["_label"],
                           f"dni N solved {value_text(rows['dni'])} (lag N + 1 = {lag:.1f} vs at most "
                           f"T − 1 = {window_lag} inside a window); late cosine {value_text(cos)}; "
                           f"late norm ratio SG/true {value_text(norm)}",
                           min(lag - window_lag, cos["mean"] - R3_MIN_COSINE),
                           lag > window_lag and cos["mean"] > R3_MIN_COSINE))
    return finish(ev)


def check_u1(m: Measured) -> Check:
    """On MNIST, the better of unlock / cunlock (mean) within U1_MAX_GAP points of backprop, every cell measured."""
    ev = []
    for key, rows in ff_cells(m.ff).items():
        tried = [rows[x] for x in UNLOCK_METHODS if x in rows]
        if key[0] == "mnist" and "backprop" in rows and tried:
            best = min(tried, key=lambda r: r["mean"])
            gap = best["mean"] - rows["backprop"]["mean"]
            ev.append(Evidence(key, rows["_label"], "; ".join(f"{r['method']} {value_text(r)}" for r in tried)
                               + f" vs backprop {value_text(rows['backprop'])} (best gap {gap:+.2f})",
                               U1_MAX_GAP - gap, gap <= U1_MAX_GAP))
    return finish(ev)


def check_a1(m: Measured) -> Check:
    """Every (cell, method) run at p = 1 and at some p <= A1_MAX_P: mean error at the smallest p
    <= mean error at p = 1 + A1_MAX_LOSS points."""
    full = ff_cells(m.ff)
    ev = []
    for (dataset, arch, layers, method), group in m.ff[m.ff["update_prob"] <= A1_MAX_P].groupby(
            ["dataset", "arch", "layers", "method"]):
        key = (base_dataset(dataset), arch, int(layers))
        if method not in full.get(key, {}):
            continue
        low = group.loc[group["update_prob"].idxmin()]
        loss = low["mean"] - full[key][method]["mean"]
        ev.append(Evidence(key + (method,), f"{full[key]['_label']}, {method}",
                           f"p = {low['update_prob']:g}: {value_text(low)} vs p = 1: {value_text(full[key][method])}"
                           f" ({loss:+.2f})", A1_MAX_LOSS - loss, loss <= A1_MAX_LOSS))
    return finish(ev)


def _decoupled_vs_locked(m: Measured, value: str, unit: str, better: Callable[[float, float], float]) -> Check:
    """Every (cell, K >= 2) with locked backprop and an SG method: `better(sg, locked)` > 0 for each SG method
    (each late-SG variant of it on its own)."""
    ev = []
    for key, g in m.par[m.par["workers"] > 1].groupby(CELL + ["workers"]) if not m.par.empty else ():
        rows = {variant_label(r["method"], r["late_sg"]): r for r in g.to_dict("records")}
        if "backprop" not in rows:
            continue
        label = f"{net_label(dict(zip(CELL, key)))}, K = {int(key[3])}"
        for method in sorted(v for v, r in rows.items() if r["method"] in ("cdni", "dni")):
            sg, locked = rows[method][value], rows["backprop"][value]
            margin = better(sg, locked)
            ev.append(Evidence(tuple(key) + (method,), f"{label}, {method}",
                               f"{method} {pm(sg, rows[method][value + '_ci95'], 1)} vs locked backprop "
                               f"{pm(locked, rows['backprop'][value + '_ci95'], 1)} {unit} "
                               f"(single-process backprop ×{rows[method]['speedup']:.2f} in samples/s)",
                               margin, margin > 0))
    return finish(ev)


def check_p1(m: Measured) -> Check:
    """Throughput: mean samples/s of each SG method > locked backprop's on the same K >= 2 workers."""
    return _decoupled_vs_locked(m, "samples_per_s", "samples/s", lambda sg, locked: sg / locked - 1)


def check_p2(m: Measured) -> Check:
    """Time to target: mean seconds of each SG method < locked backprop's on the same K >= 2 workers
    (never reaching the target in some seed counts as never). The target: the lowest of the runs' targets
    that single-process backprop reaches in every repetition (parallel tables' headline_target)."""
    def better(sg, locked):
        if math.isinf(sg):
            return -math.inf
        return math.inf if math.isinf(locked) else locked / sg - 1
    return _decoupled_vs_locked(m, "time_to_target_s", "s", better)


def _speed_source(ref: dict) -> str:
    return f"{ref['parallel_speed']['source']} ({ref['parallel_speed']['status']})"


@dataclass(frozen=True)
class Claim:
    id: str
    family: str
    says: str                       # the claim, in this project's words
    rule: str                       # the verdict rule, as check() applies it
    paper: Callable[[dict], str]    # where [DNI] states it and what it reports
    check: Callable[[Measured], Check]


def _table1(ref: dict) -> str:
    return f"{ref['table1']['source']} ({ref['table1']['status']}), 500k iterations"


def _rnn(ref: dict) -> str:
    return f"{ref['rnn_largest_length']['source']} ({ref['rnn_largest_length']['status']})"


CLAIMS = (
    Claim("F1", "feedforward", "DNI and cDNI train every net far below the No-Bprop baseline (last layer only).",
          "mean test error of DNI and of cDNI < mean No-Bprop error, in every data set / net / depth cell "
          "measured with No Bprop", _table1, check_f1),
    Claim("F2", "feedforward", "On MNIST, DNI and cDNI end within about 2.5 points of backprop at every depth.",
          f"|mean DNI − mean backprop| ≤ {F2_MAX_GAP} points, and the same for cDNI, in every MNIST cell measured",
          _table1, check_f2),
    Claim("F3", "feedforward", "With 4 or more layers, conditioning the SG on the label (cDNI) is at least as "
          "good as DNI.", f"mean cDNI error ≤ mean DNI error + {F3_SLACK} points (slack for seed noise and the "
          "paper's rounding) in every cell with ≥ 4 hidden layers", _table1, check_f3),
    Claim("F4", "feedforward", "DNI falls further behind backprop as the net gets deeper.",
          "for each data set's FCN measured at ≥ 2 depths: (mean DNI − mean backprop) at the deepest depth > the "
          "same gap at the shallowest (FCN only: [DNI]'s CNN gaps, 0.1 and 0.1 points on MNIST in Table 1, "
          "recalled, are within rounding)", _table1, check_f4),
    Claim("R1", "rnn", "With the same truncation T, DNI learns longer copy / repeat-copy sequences than BPTT "
          "(about twice as long).", "mean largest length solved by DNI > BPTT's at every (task, T) measured with "
          "both; the ratio is reported, not judged", _rnn, check_r1),
    Claim("R2", "rnn", "The auxiliary task (DNI + Aux) does at least as well as DNI.",
          "mean largest length solved by dni_aux ≥ dni's at every (task, T) measured with both",
          lambda ref: f"{ref['rnn_largest_length']['source']}: no DNI + Aux numbers copied into sgbench", check_r2),
    Claim("R3", "rnn", "Dependencies longer than the truncation window are learned: the SG carries signal "
          "across the boundary.", f"copy task, every T measured with DNI: (a) mean N solved + 1 > T − 1 (the first "
          f"input is needed N + 1 steps later; a window of T steps holds lags of at most T − 1, so every such "
          f"dependency crosses a boundary) and (b) the cosine between the SG and its target (the gradient "
          f"arriving at the boundary), averaged over the last {LATE_FRACTION:.0%} of each run's logged "
          f"points and then over seeds, > {R3_MIN_COSINE:g} (aligned; a random SG averages 0). The SG/true norm ratio is reported, not judged. "
          "(a) alone is not enough: BPTT can also pass T by chance.", _rnn, check_r3),
    Claim("U1", "feedforward", "Complete unlock (synthetic inputs and synthetic gradients) still trains an "
          "MNIST FCN to within a few points of backprop.", f"min(mean unlock, mean cunlock) − mean backprop ≤ "
          f"{U1_MAX_GAP} points in every MNIST cell measured with an unlock method",
          lambda ref: f"{ref['unlock']['source']} ({ref['unlock']['status']}): about "
                      f"{ref['unlock']['mnist_fcn_test_error']:g} % test error", check_u1),
    Claim("A1", "feedforward", "Updating each layer only at random steps (probability p well below 1) "
          "still trains, with error degrading gracefully.", f"for every (cell, method) run at p = 1 and at a "
          f"p ≤ {A1_MAX_P}: mean error at the smallest p ≤ mean error at p = 1 + {A1_MAX_LOSS} points",
          lambda ref: f"{ref['async_updates']['source']} ({ref['async_updates']['status']}): trains at p = "
                      f"{ref['async_updates']['update_prob_example']:g}; no error numbers copied", check_a1),
    Claim("P1", "parallel", "Decoupled SG training on K workers processes more samples per second than locked "
          "backprop on the same workers.", "mean samples/s of each SG method (dni, cdni) > mean samples/s of the "
          "locked backprop pipeline, at every (net, K ≥ 2) measured with both", _speed_source, check_p1),
    Claim("P2", "parallel", "Decoupled SG training on K workers reaches a target test error sooner in wall-clock "
          "than locked backprop on the same workers.", "mean training seconds to the target test error (the lowest "
          "target single-process backprop reaches in every repetition) of each SG method < the locked pipeline's, at every (net, K ≥ 2) measured with both; a method that misses the "
          "target in any seed counts as never reaching it", _speed_source, check_p2),
)
