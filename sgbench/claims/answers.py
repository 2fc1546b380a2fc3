"""The question, answered: the points researchers raise about synthetic gradients (Q1-Q3) and the
claims of the usual answers (A1-A7), each with the experiment that tests it and its rule beside its
words, applied to every tier like the paper's claims (same three-valued scheme, docs/statistics.md):
supported / refuted / inconclusive at this tier, with the reason. Torch-free."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from ..analysis.stats import FAILS, HOLDS, Decision
from ..analysis.tables import net_label
from .rules import FF_CELL, Measured, ff_cells, rnn_cells, with_headline_seconds
from .verdicts import (
    INCONCLUSIVE,
    REFUTED,
    SUPPORTED,
    Check,
    Evidence,
    compare,
    every_cell,
    some_cell,
)

SG = ("cdni", "dni")
# Data-parallel baselines of the parallel family (issue 15 item 1); absent: Q3 has no cell.
DATA_PARALLEL = ("ddp_split", "ddp_keep")
# rnn runs: what one window update of truncated BPTT costs (issue 15: A1). The memory is the bytes
# autograd keeps for the backward pass (exact and repeatable on one backend: sgbench.runtime.step_memory);
# the CUDA-only allocation peak is reported beside it in the RNN tables, not judged (a CPU run has none).
BPTT_MEMORY = "activation_memory_mb"
BPTT_STEP = "step_s"


def _par(m: Measured) -> pd.DataFrame:
    """The parallel runs with their seconds to the headline target; SG methods with their default late-SG
    learning (reevaluate: the parallel tables compare the stored variant)."""
    if m.par is None or m.par.empty:
        return pd.DataFrame()
    par = with_headline_seconds(m.par)
    if "late_sg" in par:
        par = par[~par["method"].isin(SG) | (par["late_sg"] == "reevaluate")]
    return par


def _time(runs: pd.DataFrame) -> pd.DataFrame:
    """Never reaching the target (NaN) is an infinitely long time."""
    return runs.assign(time_to_target_s=runs["time_to_target_s"].fillna(float("inf")))


def _faster(key, label, a, b, names) -> Evidence:
    """a reaches the target in less wall-clock than b; a method that misses it in a seed never does."""
    a, b = _time(a), _time(b)
    never_a, never_b = (bool((x["time_to_target_s"] == float("inf")).any()) for x in (a, b))
    if never_a or never_b:
        state = FAILS if never_a else HOLDS
        return Evidence(key, label, f"{names[0]} {'never' if never_a else 'reaches'}, {names[1]} "
                        f"{'never' if never_b else 'reaches'} the target in some seed", None,
                        Decision(state, "", float("inf")))
    return compare(key, label, a, b, "time_to_target_s", "<", 0.0, False, names, improving=False)


def q1(m: Measured) -> Check:
    """Refuted when an SG method on K >= 2 workers reaches the target sooner than single-process backprop."""
    par, ev = _par(m), []
    if not par.empty:
        for (dataset, arch, layers), net in par.groupby(FF_CELL):
            single = net[(net["method"] == "backprop") & (net["workers"] == 1)]
            for (k, method), g in net[(net["workers"] > 1) & net["method"].isin(SG)].groupby(["workers", "method"]):
                if not single.empty:
                    label = f"{net_label({'dataset': dataset, 'arch': arch, 'layers': layers})}, K = {k}, {method}"
                    ev.append(_faster((dataset, arch, layers, k, method), label, g, single,
                                      (f"{method} on {k} workers", "single-process backprop")))
    return some_cell(ev, "no parallel runs of an SG method on K >= 2 beside single-process backprop",
                     names=(REFUTED, SUPPORTED))


def _dni_longer(m: Measured) -> list[Evidence]:
    return [compare(key, rows["_label"], rows["dni"], rows["bptt"], "largest_length_solved", ">", 0.0, m.exact,
                    ("dni", "bptt"), improving=False)
            for key, rows in rnn_cells(m.rnn).items() if "dni" in rows and "bptt" in rows]


def q2(m: Measured) -> Check:
    return some_cell(_dni_longer(m), "no (task, T) with both DNI and BPTT", names=(REFUTED, SUPPORTED))


def q3(m: Measured) -> Check:
    par, ev = _par(m), []
    if not par.empty:
        for (dataset, arch, layers, k), g in par[par["workers"] > 1].groupby(FF_CELL + ["workers"]):
            rows = dict(tuple(g.groupby("method")))
            label = f"{net_label({'dataset': dataset, 'arch': arch, 'layers': layers})}, K = {k}"
            ev += [_faster((dataset, arch, layers, k, x, y), f"{label}, {x} vs {y}", rows[x], rows[y], (x, y))
                   for x in SG if x in rows for y in DATA_PARALLEL if y in rows]
    return some_cell(ev, "no data-parallel baseline beside an SG method on the same K", names=(REFUTED, SUPPORTED))


def _bptt_cost_grows(m: Measured) -> list[Evidence]:
    """Per task and cost (memory, step time): BPTT's update at its largest T costs more than at its
    smallest (seeds paired; memory is the same in every seed, so its interval is a point)."""
    rnn, ev = m.rnn, []
    if rnn is None or rnn.empty or BPTT_MEMORY not in rnn:
        return ev
    bptt = rnn[(rnn["method"] == "bptt") & rnn[BPTT_MEMORY].notna()]
    if BPTT_STEP in bptt:
        bptt = bptt.assign(step_ms=bptt[BPTT_STEP] * 1e3)  # shown with 2 decimals: ms, not s
    for task, g in bptt.groupby("task"):
        Ts = sorted(g["T"].unique())
        if len(Ts) >= 2:
            lo, hi = g[g["T"] == Ts[0]], g[g["T"] == Ts[-1]]
            for value, what in ((BPTT_MEMORY, "activation memory (MiB)"), ("step_ms", "ms per update")):
                if value in g and g[value].notna().all():
                    ev.append(compare((task, value), f"{task}: BPTT {what}, T = {Ts[0]} → {Ts[-1]}", hi, lo, value,
                                      ">", 0.0, m.exact, (f"T = {Ts[-1]}", f"T = {Ts[0]}"), improving=False))
    return ev


def a1(m: Measured) -> Check:
    """Both: a BPTT update's memory and time grow with T (so the window is bounded by the machine),
    and the gradient from beyond the window matters (DNI, which estimates it, learns longer sequences
    than BPTT at some T)."""
    matters = some_cell(_dni_longer(m), "no (task, T) with both DNI and BPTT")
    grows = every_cell(_bptt_cost_grows(m), "BPTT's memory and step time at two or more T not measured",
                       names=(SUPPORTED, REFUTED))
    evidence = matters.evidence + grows.evidence
    if REFUTED in (matters.verdict, grows.verdict):
        return Check(REFUTED, "", evidence)
    if matters.verdict == grows.verdict == SUPPORTED:
        return Check(SUPPORTED, "", evidence)
    return Check(INCONCLUSIVE, "; ".join(c.reason for c in (matters, grows) if c.verdict == INCONCLUSIVE), evidence)


def _diag(m: Measured) -> pd.DataFrame:
    return m.diag if m.diag is not None else pd.DataFrame()


def a2(m: Measured) -> Check:
    """More DNIs, worse: at every net and SG method, DNIs at every boundary end with a higher error
    than a single DNI in the middle."""
    d, ev = _diag(m), []
    if not d.empty:
        base = d[(d["warmup"] == 0) & d["default_sg"].astype(bool)]
        for (dataset, arch, layers, method), g in base[base["method"].isin(SG)].groupby(FF_CELL + ["method"]):
            every, middle = g[g["dni_placement"] == "every"], g[g["dni_placement"] == "middle"]
            if not every.empty and not middle.empty:
                label = f"{net_label({'dataset': dataset, 'arch': arch, 'layers': layers})}, {method}"
                ev.append(compare((dataset, arch, layers, method), label, every, middle, "test_error", ">", 0.0,
                                  m.exact, ("every boundary", "one in the middle")))
    return every_cell(ev, "no diagnostics placement runs (every vs middle)", names=(SUPPORTED, REFUTED))


def a3(m: Measured) -> Check:
    """Backprop first helps: the largest warm-up ends with a lower error than none, at every net and method."""
    d, ev = _diag(m), []
    if not d.empty:
        base = d[(d["dni_placement"] == "every") & d["default_sg"].astype(bool) & d["method"].isin(SG)]
        for (dataset, arch, layers, method), g in base.groupby(FF_CELL + ["method"]):
            w = g["warmup"].max()
            if w > 0 and (g["warmup"] == 0).any():
                label = f"{net_label({'dataset': dataset, 'arch': arch, 'layers': layers})}, {method}"
                ev.append(compare((dataset, arch, layers, method), label, g[g["warmup"] == w], g[g["warmup"] == 0],
                                  "test_error", "<", 0.0, m.exact, (f"warm-up {w:.0%}", "none")))
    return every_cell(ev, "no diagnostics warm-up runs beside runs without", names=(SUPPORTED, REFUTED))


def _step_rate(m: Measured, side: str) -> list[Evidence]:
    ev = []
    for key, rows in ff_cells(m.ff).items():
        if "backprop" in rows:
            ev += [compare(key + (x,), f"{rows['_label']}, {x}", rows[x], rows["backprop"], "steps_per_s", side, 0.0,
                           m.exact, (x, "backprop"), improving=False) for x in SG if x in rows]
    return ev


def a4(m: Measured) -> Check:
    """Not free: in one process each SG method takes fewer steps per second than backprop, every net."""
    return every_cell(_step_rate(m, "<"), "no feed-forward runs of an SG method beside backprop",
                      names=(SUPPORTED, REFUTED))


def a5(m: Measured) -> Check:
    return some_cell(_dni_longer(m), "no (task, T) with both DNI and BPTT", names=(SUPPORTED, REFUTED))


def a6(m: Measured) -> Check:
    """Supported when an SG method takes more steps per second than backprop in some net."""
    return some_cell(_step_rate(m, ">"), "no feed-forward runs of an SG method beside backprop",
                     names=(SUPPORTED, REFUTED))


def a7(m: Measured) -> Check:
    """Complete unlock trains the hidden layers: an unlock method ends below No Bprop (which trains
    only the last layer), in some net."""
    ev = []
    for key, rows in ff_cells(m.ff).items():
        if "no_bprop" in rows:
            ev += [compare(key + (x,), f"{rows['_label']}, {x}", rows[x], rows["no_bprop"], "test_error", "<", 0.0,
                           m.exact, (x, "no_bprop")) for x in ("unlock", "cunlock") if x in rows]
    return some_cell(ev, "no unlock runs beside No Bprop", names=(SUPPORTED, REFUTED))


@dataclass(frozen=True)
class Point:
    id: str
    says: str                       # the point, in a sentence
    experiment: str                 # which family, which cells test it
    rule: str                       # the rule, as check() applies it
    check: Callable[[Measured], Check]
    answers: dict                   # verdict -> one-line plain answer


POINTS = (
    Point("Q1", "An SG between every layer cannot make training faster: the device does the same computations, "
          "only shifted in time.", "parallel: MNIST FCN on K = 1, 2 worker processes; time to the target test "
          "error of cDNI / DNI on K ≥ 2 vs single-process backprop",
          "refuted when an SG method on K ≥ 2 workers reaches the target sooner (95 % interval of the difference "
          "of seconds below 0) than single-process backprop in some cell; supported when it is slower in every "
          "cell (a seed that never reaches the target: never)", q1,
          {SUPPORTED: "No: at this tier no SG method on several workers beat one process of backprop to the target.",
           REFUTED: "Yes, it can: with one worker per layer group an SG method reached the target sooner.",
           INCONCLUSIVE: "Not decided at this tier."}),
    Point("Q2", "An SG at the last time step predicts a gradient from the future that is negligible anyway, so "
          "nothing is gained.", "rnn: copy / repeat copy, largest length solved by DNI vs BPTT at the same T",
          "refuted when DNI solves longer sequences than BPTT at the same T (interval of the difference above 0) "
          "in some cell; supported when it does not in any cell", q2,
          {SUPPORTED: "At this tier DNI learned no longer sequences than truncated BPTT.",
           REFUTED: "Something is gained: with the same truncation DNI learns longer sequences than BPTT.",
           INCONCLUSIVE: "Not decided at this tier."}),
    Point("Q3", "Training parts on separate machines with SGs is no different from data-parallel minibatch "
          "training.", "parallel: SG methods vs the data-parallel baselines (DDP) on the same K workers, time to "
          "target", "refuted when an SG method reaches the target sooner than a data-parallel baseline on the "
          "same K in some cell; supported when every data-parallel baseline is faster", q3,
          {SUPPORTED: "At this tier data parallelism reached the target sooner than every SG method.",
           REFUTED: "They differ: an SG method beat data parallelism on the same workers.",
           INCONCLUSIVE: "Not decided at this tier."}),
    Point("A1", "We truncate because of memory and compute limits, not because the future gradient is small.",
          "rnn: BPTT's activation memory and seconds per update at each T; DNI vs BPTT largest length solved",
          "supported when a BPTT update's activation memory and its seconds both grow from the smallest to the "
          "largest T (interval above 0, every task) and the gradient from beyond the window matters (DNI, which "
          "estimates it, solves longer sequences than BPTT in some cell); refuted when either fails", a1,
          {SUPPORTED: "Yes: longer windows cost memory and time, and the cut-off gradient was worth estimating.",
           REFUTED: "No: at this tier either the cost did not grow with T or the cut-off gradient did not matter.",
           INCONCLUSIVE: "Not decided at this tier."}),
    Point("A2", "The more DNI modules, the noisier the signal.", "diagnostics: MNIST FCN-6, DNIs at every boundary "
          "vs a single one in the middle, final test error", "supported when DNIs at every boundary end with a "
          "higher error than one in the middle (interval above 0) in every net and SG method measured; refuted "
          "when lower in one", a2,
          {SUPPORTED: "Yes: more DNIs, higher error.", REFUTED: "No: more DNIs did not cost accuracy here.",
           INCONCLUSIVE: "Not decided at this tier."}),
    Point("A3", "Train with ordinary backprop for a while first, then switch to DNI.", "diagnostics: MNIST FCN-6, "
          "warm-up of exact backprop (largest w) vs none, final test error", "supported when the warm-up ends with "
          "a lower error (interval below 0) in every net and SG method measured; refuted when higher in one", a3,
          {SUPPORTED: "Yes: a backprop warm-up lowered the final error.",
           REFUTED: "No: the warm-up did not help here.", INCONCLUSIVE: "Not decided at this tier."}),
    Point("A4", "A DNI is not free: an SG costs matrix products and gives little on a simple dense layer.",
          "feedforward: training steps per second of DNI / cDNI vs backprop in one process, same hardware",
          "supported when every SG method takes fewer steps per second than backprop (interval below 0) in every "
          "net measured; refuted when one is faster", a4,
          {SUPPORTED: "Right: in one process every SG method made fewer steps per second than backprop.",
           REFUTED: "Not here: an SG method was as fast per step as backprop.",
           INCONCLUSIVE: "Not decided at this tier."}),
    Point("A5", "The real benefit is learning longer sequences.", "rnn: largest length solved, DNI vs BPTT at the "
          "same T", "supported when DNI solves longer sequences than BPTT in some cell (interval above 0); refuted "
          "when it does not in any", a5,
          {SUPPORTED: "Yes: DNI learned longer sequences than BPTT with the same truncation.",
           REFUTED: "Not at this tier: DNI learned no longer sequences than BPTT.",
           INCONCLUSIVE: "Not decided at this tier."}),
    Point("A6", "The SG is cheaper to compute than the true gradient, so each iteration is faster.",
          "feedforward: training steps per second of DNI / cDNI vs backprop in one process",
          "supported when an SG method takes more steps per second than backprop (interval above 0) in some net; "
          "refuted when every SG method is slower in every net", a6,
          {SUPPORTED: "Yes: an SG method made more steps per second than backprop.",
           REFUTED: "No: in one process each SG step cost more than a backprop step.",
           INCONCLUSIVE: "Not decided at this tier."}),
    Point("A7", "The authors also predicted each layer's inputs (complete unlock).", "feedforward: unlock / cunlock "
          "vs No Bprop (last layer only), final test error", "supported when an unlock method ends below No Bprop "
          "(interval below 0) in some net: predicted inputs still train the hidden layers; refuted when no "
          "unlock method does", a7,
          {SUPPORTED: "Yes, and it trains: with predicted inputs and SGs the hidden layers still learned.",
           REFUTED: "Complete unlock did not train the hidden layers at this tier.",
           INCONCLUSIVE: "Not decided at this tier."}),
)
