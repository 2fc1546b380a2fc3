"""Claims and the question's points as declared records (issue #23): each record holds its id, its
words, its source, the cells it needs, the compared methods, the metric, side and threshold, the
competence its baseline must show and its plain-language answers; its check and the report's words
are generated from it (`Record.check`, `Record.rule_text`). A record whose rule is not one comparison of
two methods per cell names a hand-written `rule` function instead (rules.py and answers.py say which
and why). Torch-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from ..analysis.reference import load_reference
from ..analysis.stats import METRICS, UNDECIDED, Decision
from ..analysis.tables import net_label
from ..families.feedforward import time_to_result
from .gate import SYMBOL, Competence, ReachesTarget, at_floor
from .verdicts import (
    CONTRADICTED,
    REPRODUCED,
    Check,
    Evidence,
    compare,
    compare_ratio,
    every_cell,
    seed_values,
    some_cell,
)

FF_CELL = ["dataset", "arch", "layers"]


# ---------------------------------------------------------------- measurements

@dataclass(frozen=True)
class Measured:
    """Per-seed runs of each family (runs tables as `aggregate` writes them; a `status` column marks
    diverged runs). exact: [DNI]'s own numbers, one value per cell, compared as they stand (no gate).
    reference: [DNI]'s numbers, which the competence gate reads."""
    ff: pd.DataFrame
    rnn: pd.DataFrame
    par: pd.DataFrame
    diag: pd.DataFrame | None = None
    exact: bool = False
    charlm: pd.DataFrame | None = None  # char-LM runs: test bits per character by corpus / method / T
    ff_curves: pd.DataFrame | None = None  # feed-forward curves (val_error, elapsed_s): time to result
    reference: dict = field(default_factory=load_reference, repr=False)


def _or_empty(df: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns) if df is None or df.empty else df


def measured_from_runs(ff_runs, rnn_runs, par_runs=None, diag_runs=None, charlm_runs=None,
                       ff_curves=None) -> Measured:
    return Measured(_or_empty(ff_runs, FF_CELL + ["method", "update_prob", "seed", "test_error"]),
                    _or_empty(rnn_runs, ["task", "method", "T", "seed", "largest_length_solved"]),
                    _or_empty(par_runs, FF_CELL + ["method", "workers", "seed"]),
                    _or_empty(diag_runs, FF_CELL + ["method", "seed", "test_error"]),
                    charlm=_or_empty(charlm_runs, ["corpus", "method", "T", "seed", "test_bpc"]),
                    ff_curves=None if ff_curves is None or ff_curves.empty else ff_curves)


def base_dataset(name: str) -> str:
    """cifar10-jpeg is compared with [DNI]'s cifar10 (and labelled as the JPEG copy)."""
    return name.split("-")[0]


# ---------------------------------------------------------------- cells: {key: {"_label": ..., side: runs}}

def ff_cells(ff: pd.DataFrame, update_prob: float = 1.0) -> dict[tuple, dict]:
    """{(base data set, arch, layers): {"_label": ..., method: runs}} at one update probability."""
    cells: dict[tuple, dict] = {}
    runs = ff[ff["update_prob"] == update_prob]
    for (dataset, arch, layers, method), g in runs.groupby(FF_CELL + ["method"], sort=True):
        key = (base_dataset(dataset), arch, int(layers))
        cells.setdefault(key, {"_label": net_label({"dataset": dataset, "arch": arch, "layers": layers})})
        cells[key][method] = g
    return cells


def rnn_cells(rnn: pd.DataFrame) -> dict[tuple, dict]:
    cells: dict[tuple, dict] = {}
    for (task, T, method), g in rnn.groupby(["task", "T", "method"], sort=True):
        cells.setdefault((task, int(T)), {"_label": f"{task} T = {int(T)}"})[method] = g
    return cells


def charlm_cells(charlm: pd.DataFrame | None) -> dict[tuple, dict]:
    cells: dict[tuple, dict] = {}
    if charlm is None or charlm.empty:
        return cells
    for (corpus, T, method), g in charlm.groupby(["corpus", "T", "method"], sort=True):
        cells.setdefault(("charlm", corpus, int(T)), {"_label": f"{corpus} T = {int(T)}"})[method] = g
    return cells


def placement_cells(diag: pd.DataFrame | None) -> dict[tuple, dict]:
    """Diagnostics, per (net, SG method): DNIs at "every" boundary vs one in the "middle" (no warm-up,
    the default SG)."""
    cells: dict[tuple, dict] = {}
    if diag is None or diag.empty:
        return cells
    base = diag[(diag["warmup"] == 0) & diag["default_sg"].astype(bool)]
    for (dataset, arch, layers, method), g in base.groupby(FF_CELL + ["method"]):
        cell = {"_label": f"{net_label({'dataset': dataset, 'arch': arch, 'layers': layers})}, {method}",
                "_names": {"every": "every boundary", "middle": "one in the middle"}, "_method": method}
        for placement, runs in g.groupby("dni_placement"):
            cell[placement] = runs
        cells[(dataset, arch, layers, method)] = cell
    return cells


def warmup_cells(diag: pd.DataFrame | None) -> dict[tuple, dict]:
    """Diagnostics, per (net, SG method), DNIs at every boundary: the largest backprop warm-up vs none."""
    cells: dict[tuple, dict] = {}
    if diag is None or diag.empty:
        return cells
    base = diag[(diag["dni_placement"] == "every") & diag["default_sg"].astype(bool)]
    for (dataset, arch, layers, method), g in base.groupby(FF_CELL + ["method"]):
        w = g["warmup"].max()
        cell = {"_label": f"{net_label({'dataset': dataset, 'arch': arch, 'layers': layers})}, {method}",
                "_names": {"warmup": f"warm-up {w:.0%}"}, "_method": method}
        if w > 0 and (g["warmup"] == 0).any():
            cell |= {"warmup": g[g["warmup"] == w], "none": g[g["warmup"] == 0]}
        cells[(dataset, arch, layers, method)] = cell
    return cells


def time_cells(ff: pd.DataFrame, curves: pd.DataFrame | None) -> dict[tuple, dict]:
    """Time to result (feedforward/time_to_result.py), per (base data set, arch, layers, fraction of
    backprop's budget): {method: per-seed seconds_to_target / iterations_to_target (∞: not within budget)}."""
    cells: dict[tuple, dict] = {}
    if curves is None or ff.empty:
        return cells
    hits = time_to_result.per_seed(ff, curves).rename(
        columns={"seconds": "seconds_to_target", "iterations": "iterations_to_target"})
    for (dataset, arch, layers, f, target, method), g in hits.groupby(
            FF_CELL + ["fraction", "target", "method"], sort=True):
        key = (base_dataset(dataset), arch, int(layers), float(f))
        label = (f"{net_label({'dataset': dataset, 'arch': arch, 'layers': layers})}, target {100 * f:g} % "
                 f"(val ≤ {target:.2f} %)")
        cells.setdefault(key, {"_label": label})[method] = g
    return cells


CELLS: dict[str, Callable[[Measured], dict]] = {
    "ff": lambda m: ff_cells(m.ff),
    "time": lambda m: time_cells(m.ff, m.ff_curves),
    "rnn": lambda m: rnn_cells(m.rnn),
    "charlm": lambda m: charlm_cells(m.charlm),
    "placement": lambda m: placement_cells(m.diag),
    "warmup": lambda m: warmup_cells(m.diag),
}


# ---------------------------------------------------------------- one comparison per cell

@dataclass(frozen=True)
class Comparison:
    """Cell by cell (`cells`, a key of CELLS, narrowed by `where` on the cell key): each of `methods`
    present against `against`, `metric` of the one minus the other `side` `threshold` (95 % interval).
    `scope` names the cells in words; `competence` is what `against` (or `competence.method`) must show
    for a cell to be judged (gate.py)."""
    cells: str
    methods: tuple[str, ...]
    against: str
    metric: str
    side: str
    threshold: float
    scope: str
    where: Callable[[tuple], bool] = lambda key: True
    improving: bool = True            # read the runs' late_drop: still improving makes a cell undecided
    competence: Competence | ReachesTarget | None = None
    ratio: bool = False               # a time to target: ratio of the one to the other (compare_ratio), ∞ counts
    extra: Callable[[pd.Series, pd.Series], str] | None = None  # a note shown with the numbers (not judged)

    def words(self) -> str:
        if self.ratio:
            sides = " and ".join(f"{x} / {self.against}" for x in self.methods)
            return (f"{sides}: {METRICS[self.metric].means}, ratio {SYMBOL[self.side]} {self.threshold:g} (95 % "
                    "interval of the geometric mean over seeds; a seed not within the budget is ∞ and counts)")
        sides = " and ".join(f"{x} − {self.against}" for x in self.methods)
        bound = (f"within ±{self.threshold:g} (the whole 95 % interval)" if self.side == "within"
                 else f"{SYMBOL[self.side]} {self.threshold:g} (95 % interval)")
        return f"{sides}: {METRICS[self.metric].means} {bound}"

    def evidence(self, m: Measured) -> list[Evidence]:
        ev = []
        for key, rows in CELLS[self.cells](m).items():
            if not self.where(key) or self.against not in rows:
                continue
            tried = [x for x in self.methods if x in rows]
            for x in tried:
                ev.append(self.one(m, key, rows, x, len(self.methods) > 1))
        return ev

    def one(self, m: Measured, key: tuple, rows: dict, x: str, several: bool) -> Evidence:
        names = rows.get("_names", {})
        label = f"{rows['_label']}, {x}" if several else rows["_label"]
        a, b = rows[x], rows[self.against]
        extra = self.extra(seed_values(a, self.metric), seed_values(b, self.metric)) if self.extra else ""
        cell, pair = key + (x,) if several else key, (names.get(x, x), names.get(self.against, self.against))
        if self.ratio:   # a time to target: the ratio, ∞ where a seed missed it (verdicts.compare_ratio)
            e = compare_ratio(cell, label, a, b, self.metric, self.side, self.threshold, pair)
        else:
            e = compare(cell, label, a, b, self.metric, self.side, self.threshold, m.exact, pair,
                        improving=self.improving, extra=extra)
        reason = "" if m.exact else gate_reason(m, key, rows, self, a, b)
        return dataclasses.replace(e, decision=Decision(UNDECIDED, reason)) if reason else e


def gate_reason(m: Measured, key: tuple, rows: dict, c: Comparison, a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Why a cell has no power or an incompetent baseline ('' when it can be judged)."""
    floor = at_floor(c.metric, key, scored_frame(a, c.metric), scored_frame(b, c.metric))
    if floor:
        return floor
    if c.competence is None or c.competence.method not in rows:
        return ""
    base = rows[c.competence.method]
    return c.competence.reason(m.reference, key, seed_values(base, c.competence.metric))


def scored_frame(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    return pd.DataFrame({metric: seed_values(runs, metric).to_numpy()})


# ---------------------------------------------------------------- the record

@dataclass(frozen=True)
class Record:
    """A paper claim (verdicts reproduced / contradicted) or a point of the question (supported /
    refuted; a Q point is refuted by the win). `compare` generates the check and the rule's words;
    `rule` (hand-written, with `rule_words`) where one comparison per cell cannot say it."""
    id: str
    family: str
    says: str                                   # the claim or point, in a sentence
    source: Callable[[dict], str] | str         # claims: where [DNI] states it; points: the experiment
    compare: Comparison | None = None
    some: bool = False                          # holds in some cell (else: in every cell)
    verdicts: tuple[str, str] = (REPRODUCED, CONTRADICTED)   # (when it holds, when it fails)
    missing: str = ""                           # what "no cell" lacks
    note: str = ""                              # words added to the generated rule
    rule: Callable[[Measured], Check] | None = None
    rule_words: str = ""
    answers: dict = field(default_factory=dict)  # verdict -> one-line plain answer (points)
    # the verdict compares an SG method with backprop / No Bprop at the tier's learning rate, so it measures
    # the tuning ruleset too (issue #23): the report says so where backprop alone chose the rate
    tuned: bool = False

    def check(self, m: Measured) -> Check:
        if self.rule is not None:
            return self.rule(m)
        ev = self.compare.evidence(m)
        judge = some_cell if self.some else every_cell
        return judge(ev, self.missing, self.verdicts)

    def rule_text(self) -> str:
        """The rule as the report prints it: generated from the comparison (or the hand-written words)."""
        if self.compare is None:
            return self.rule_words
        c, yes, no = self.compare, *self.verdicts
        where = "some" if self.some else "every"
        holds, fails = ("one cell holds", "every cell fails") if self.some else ("every cell holds", "one fails")
        text = f"{c.words()} in {where} {c.scope}: *{yes}* when {holds}, *{no}* when {fails}"
        if c.competence is not None:
            text += f"; a cell is judged only when {c.competence.words}"
        return text + (f"; {self.note}" if self.note else "")

    @property
    def experiment(self) -> str:
        return self.source if isinstance(self.source, str) else ""

    @property
    def paper(self) -> Callable[[dict], str]:
        return self.source if callable(self.source) else (lambda ref: "")


def ratio_of_means(sg: pd.Series, bptt: pd.Series) -> str:
    """R1's note: how many times BPTT's length the SG method solved (reported, not judged)."""
    a, b = sg.mean(), bptt.mean()
    text = (f"{a / b:.1f}×" if b > 0 else "∞, BPTT solved none" if a > 0 else "none: neither solved a level")
    return f" (ratio of means {text})"

