"""The question, answered: the points researchers raise about synthetic gradients (Q1-Q3) and the
claims of the usual answers (A1-A7), each one declared record (records.Record) with the experiment
that tests it, its rule generated beside its words, applied to every tier like the paper's claims
(same three-valued scheme and competence gate, docs/statistics.md): supported / refuted / inconclusive
at this tier, with the reason. Torch-free.

Hand-written rules: Q1 and Q3 (a run that never reaches the target is a result, not an interval; the
cells pair methods across worker counts) and A1 (two conditions over different cells: BPTT's cost
grows with T, and the future gradient matters)."""
from __future__ import annotations

import pandas as pd

from ..analysis.stats import FAILS, HOLDS, UNDECIDED, Decision
from ..analysis.tables import net_label
from ..catalog import methods
from ..families.parallel.config import METHODS as PROTOCOLS
from .gate import BACKPROP_REACHES, BASELINE_NOT_COMPETENT, BPTT_COMPETENT, NO_POWER
from .records import FF_CELL, Comparison, Measured, Record
from .rules import with_headline_seconds
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

SG = methods("parallel", uses_sg=True)          # dni, cdni on K workers
FF_SG = methods("feedforward", uses_sg=True, unlock=False)
# Data-parallel baselines of the parallel family (issue 15 item 1); absent: Q3 has no cell.
DATA_PARALLEL = tuple(x for x, p in PROTOCOLS.items() if p.protocol == "data_parallel")
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


def _reached(runs: pd.DataFrame) -> int:
    return int((runs["time_to_target_s"] < float("inf")).sum())


def _faster(key, label, a, b, names, baseline: bool = False) -> Evidence:
    """a reaches the target in less wall-clock than b; a method that misses it in a seed never does.
    The competence gate: neither reaching it in any seed (e.g. single-process backprop reached none of the
    declared targets, so the cell has no headline target) is no power; with `baseline`, b is the
    reference, which must reach the target in every seed."""
    a, b = _time(a), _time(b)
    never_a, never_b = (bool((x["time_to_target_s"] == float("inf")).any()) for x in (a, b))
    gate = (f"{NO_POWER}: neither method reached the target within the budget in any seed"
            if not _reached(a) and not _reached(b) else
            f"{BASELINE_NOT_COMPETENT}: {names[1]} reached the target in {_reached(b)}/{len(b)} seeds"
            if baseline and never_b else "")
    if gate:
        return Evidence(key, label, f"{names[0]} reached the target in {_reached(a)}/{len(a)} seeds, {names[1]} in "
                        f"{_reached(b)}/{len(b)}", None, Decision(UNDECIDED, gate))
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
                                      (f"{method} on {k} workers", "single-process backprop"), baseline=True))
    return some_cell(ev, "no parallel runs of an SG method on K >= 2 beside single-process backprop",
                     names=(REFUTED, SUPPORTED))


DNI_LONGER = Comparison("rnn", ("dni",), "bptt", "largest_length_solved", ">", 0.0, "(task, T) measured with both",
                        competence=BPTT_COMPETENT)


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
    matters = some_cell(DNI_LONGER.evidence(m), "no (task, T) with both DNI and BPTT")
    grows = every_cell(_bptt_cost_grows(m), "BPTT's memory and step time at two or more T not measured",
                       names=(SUPPORTED, REFUTED))
    evidence = matters.evidence + grows.evidence
    if REFUTED in (matters.verdict, grows.verdict):
        return Check(REFUTED, "", evidence)
    if matters.verdict == grows.verdict == SUPPORTED:
        return Check(SUPPORTED, "", evidence)
    return Check(INCONCLUSIVE, "; ".join(c.reason for c in (matters, grows) if c.verdict == INCONCLUSIVE), evidence)


NOT_DECIDED = "Not decided at this tier."
POINTS = (
    Record("Q1", "parallel", "An SG between every layer cannot make training faster: the device does the same "
           "computations, only shifted in time.", "parallel: MNIST FCN on K = 1, 2 worker processes; time to the "
           "target test error of cDNI / DNI on K ≥ 2 vs single-process backprop", rule=q1,
           verdicts=(REFUTED, SUPPORTED),
           rule_words="refuted when an SG method on K ≥ 2 workers reaches the target sooner (95 % interval of the "
           "difference of seconds below 0) than single-process backprop in some cell; supported when it is slower "
           "in every cell (a seed that never reaches the target: never); the seconds are the parallel runs' time to "
           "target (analysis.tables.time_to_target, the feed-forward time to result's definition: the first "
           "evaluation at or below the target) at the cell's headline target, the lowest declared test error "
           "single-process backprop reaches in every seed; judged only when single-process backprop reaches it in "
           "every seed, and not when neither method reaches it",
           answers={SUPPORTED: "No: at this tier no SG method on several workers beat one process of backprop to "
                    "the target.", REFUTED: "Yes, it can: with one worker per layer group an SG method reached the "
                    "target sooner.", INCONCLUSIVE: NOT_DECIDED}),
    Record("Q2", "rnn", "An SG at the last time step predicts a gradient from the future that is negligible anyway, "
           "so nothing is gained.", "rnn: copy / repeat copy, largest length solved by DNI vs BPTT at the same T",
           DNI_LONGER, some=True, verdicts=(REFUTED, SUPPORTED), missing="no (task, T) with both DNI and BPTT",
           answers={SUPPORTED: "At this tier DNI learned no longer sequences than truncated BPTT.",
                    REFUTED: "Something is gained: with the same truncation DNI learns longer sequences than BPTT.",
                    INCONCLUSIVE: NOT_DECIDED}),
    Record("Q3", "parallel", "Training parts on separate machines with SGs is no different from data-parallel "
           "minibatch training.", "parallel: SG methods vs the data-parallel baselines (DDP) on the same K workers, "
           "time to target", rule=q3, verdicts=(REFUTED, SUPPORTED),
           rule_words="refuted when an SG method reaches the target sooner than a "
           "data-parallel baseline on the same K in some cell; supported when every data-parallel baseline is faster",
           answers={SUPPORTED: "At this tier data parallelism reached the target sooner than every SG method.",
                    REFUTED: "They differ: an SG method beat data parallelism on the same workers.",
                    INCONCLUSIVE: NOT_DECIDED}),
    Record("A1", "rnn", "We truncate because of memory and compute limits, not because the future gradient is "
           "small.", "rnn: BPTT's activation memory and seconds per update at each T; DNI vs BPTT largest length "
           "solved", rule=a1, verdicts=(SUPPORTED, REFUTED),
           rule_words="supported when a BPTT update's activation memory and its seconds both grow "
           "from the smallest to the largest T (interval above 0, every task) and the gradient from beyond the "
           "window matters (DNI, which estimates it, solves longer sequences than BPTT in some cell, judged only "
           f"when {BPTT_COMPETENT.words}); refuted when either fails",
           answers={SUPPORTED: "Yes: longer windows cost memory and time, and the cut-off gradient was worth "
                    "estimating.", REFUTED: "No: at this tier either the cost did not grow with T or the cut-off "
                    "gradient did not matter.", INCONCLUSIVE: NOT_DECIDED}),
    Record("A2", "diagnostics", "The more DNI modules, the noisier the signal.", "diagnostics: MNIST FCN-6, DNIs "
           "at every boundary vs a single one in the middle, final test error",
           Comparison("placement", ("every",), "middle", "test_error", ">", 0.0, "net and SG method measured"),
           verdicts=(SUPPORTED, REFUTED), missing="no diagnostics placement runs (every vs middle)",
           answers={SUPPORTED: "Yes: more DNIs, higher error.", REFUTED: "No: more DNIs did not cost accuracy here.",
                    INCONCLUSIVE: NOT_DECIDED}),
    Record("A3", "diagnostics", "Train with ordinary backprop for a while first, then switch to DNI.",
           "diagnostics: MNIST FCN-6, warm-up of exact backprop (largest w) vs none, final test error",
           Comparison("warmup", ("warmup",), "none", "test_error", "<", 0.0, "net and SG method measured"),
           verdicts=(SUPPORTED, REFUTED), missing="no diagnostics warm-up runs beside runs without",
           answers={SUPPORTED: "Yes: a backprop warm-up lowered the final error.",
                    REFUTED: "No: the warm-up did not help here.", INCONCLUSIVE: NOT_DECIDED}),
    Record("A4", "feedforward", "A DNI is not free: an SG costs matrix products and gives little on a simple dense "
           "layer.", "feedforward: time to result in one process, same hardware: training seconds of DNI / cDNI "
           "vs backprop to each validation-error target set by backprop's own curve (25 / 50 / 100 % of its budget)",
           Comparison("time", FF_SG, "backprop", "seconds_to_target", ">", 1.0,
                      "net and target measured with both", improving=False, competence=BACKPROP_REACHES, ratio=True),
           verdicts=(SUPPORTED, REFUTED), missing="no feed-forward curves (val_error, elapsed_s) of an SG method "
           "beside backprop's",
           note="cost and gain in one number: what an SG step costs and how far it gets (per-step cost alone is A6)",
           answers={SUPPORTED: "Right: in one process every SG method took longer than backprop to reach each of "
                    "backprop's targets, or never reached it.", REFUTED: "Not here: an SG method reached one of "
                    "backprop's targets sooner than backprop.", INCONCLUSIVE: NOT_DECIDED}),
    Record("A5", "rnn", "The real benefit is learning longer sequences.", "rnn: largest length solved, DNI vs BPTT "
           "at the same T", DNI_LONGER, some=True, verdicts=(SUPPORTED, REFUTED),
           missing="no (task, T) with both DNI and BPTT",
           answers={SUPPORTED: "Yes: DNI learned longer sequences than BPTT with the same truncation.",
                    REFUTED: "Not at this tier: DNI learned no longer sequences than BPTT.",
                    INCONCLUSIVE: NOT_DECIDED}),
    Record("A6", "feedforward", "The SG is cheaper to compute than the true gradient, so each iteration is faster.",
           "feedforward: training steps per second of DNI / cDNI vs backprop in one process",
           Comparison("ff", FF_SG, "backprop", "steps_per_s", ">", 0.0, "net measured with both", improving=False),
           some=True, verdicts=(SUPPORTED, REFUTED), missing="no feed-forward runs of an SG method beside backprop",
           note="the claim is about the cost of one iteration, so steps per second stays its metric: time to result "
           "also counts how far each step gets, which is A4's question",
           answers={SUPPORTED: "Yes: an SG method made more steps per second than backprop.",
                    REFUTED: "No: in one process each SG step cost more than a backprop step.",
                    INCONCLUSIVE: NOT_DECIDED}),
    Record("A7", "feedforward", "The authors also predicted each layer's inputs (complete unlock).", "feedforward: "
           "unlock / cunlock vs No Bprop (last layer only), final test error",
           Comparison("ff", methods("feedforward", unlock=True), "no_bprop", "test_error", "<", 0.0,
                      "net measured with both"), some=True, verdicts=(SUPPORTED, REFUTED),
           missing="no unlock runs beside No Bprop", note="predicted inputs still train the hidden layers",
           answers={SUPPORTED: "Yes, and it trains: with predicted inputs and SGs the hidden layers still learned.",
                    REFUTED: "Complete unlock did not train the hidden layers at this tier.",
                    INCONCLUSIVE: NOT_DECIDED}),
)
