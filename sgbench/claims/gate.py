"""The competence gate (issue #23): a cell is judged only where it could have come out either way.

Before a cell's interval is read against its rule, two declared conditions can make it undecided:

* *no power*: every seed of both compared methods sits at the metric's floor (FLOORS), e.g. an RNN
  that passed only the curriculum's first levels, or no length beyond what one window of T steps holds;
  a difference of +0.00 [+0.00, +0.00] between two such methods answers nothing;
* *the baseline did not train at this tier*: the reference method misses its declared competence
  (a Competence record, declared with each claim beside its words and printed with its verdict).

The third gate, *still improving*, is the drift that analysis.stats.decide reads from each run's
late_drop (feed-forward: error fallen over the last tenth; RNN: curriculum length gained; char-LM:
validation bpc fallen). Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

NO_POWER = "no power"
BASELINE_NOT_COMPETENT = "the baseline did not train at this tier"
# The RNN curriculum's first levels: lengths 1 and 2 are solved by chance-level memory in a few
# thousand steps by every method (the quick tier's BPTT and DNI both stop there).
RNN_FIRST_LEVELS = 2
# Test error of a 10-class guess: two methods both at or above it learned nothing.
CHANCE_ERROR = 90.0
# Competence margins: BPTT must reach this fraction of [DNI]'s BPTT length at the same T (recalled);
# backprop's error may exceed [DNI]'s Table 1 (recalled) by this many points (a short budget ends
# higher; beyond it the reference net did not train).
BPTT_FRACTION = 0.5
BACKPROP_MARGIN = 2.0
SYMBOL = {"<=": "≤", ">=": "≥", "<": "<", ">": ">", "within": "within ±"}


def rnn_floor(key: tuple) -> float:
    """The largest length at which an RNN cell (task, T) has no power: the first levels, or a length a
    window of T steps holds (T - 1)."""
    return max(RNN_FIRST_LEVELS, key[1] - 1)


# metric -> (the value at or beyond which a run is at the floor, for a cell key; the side of the floor)
FLOORS: dict[str, tuple[Callable[[tuple], float], str]] = {
    "largest_length_solved": (rnn_floor, "<="),
    "lag_solved": (rnn_floor, "<="),
    "test_error": (lambda key: CHANCE_ERROR, ">="),
    # time to result: a seed that never reached the target is ∞; no compared method reaching it in any
    # seed says nothing about which is faster
    "seconds_to_target": (lambda key: math.inf, ">="),
    "iterations_to_target": (lambda key: math.inf, ">="),
}


def at_floor(metric: str, key: tuple, *groups: pd.DataFrame) -> str:
    """The no-power reason when every seed of every group is at the metric's floor, else ''."""
    if metric not in FLOORS or not groups:
        return ""
    floor, side = FLOORS[metric]
    bound = floor(key)
    values = pd.concat([g[metric].astype(float) for g in groups])
    at = (values <= bound) if side == "<=" else (values >= bound)
    if values.empty or not at.all():
        return ""
    if bound == math.inf:
        return f"{NO_POWER}: neither method reached the target within the budget in any seed"
    return f"{NO_POWER}: both methods at the floor ({metric} {SYMBOL[side]} {bound:g} in every seed)"


@dataclass(frozen=True)
class Competence:
    """What the reference method must reach in a cell for the cell to be judged. `required(reference,
    key)` gives the bound (None: [DNI] has no number for this cell, so no requirement applies); `words`
    is printed beside the verdict."""
    method: str
    metric: str
    side: str                                  # ">=": at least the bound; "<=": at most
    words: str
    required: Callable[[dict, tuple], float | None]

    def reason(self, reference: dict, key: tuple, values: pd.Series | None) -> str:
        """'' when the baseline's per-seed `values` of `metric` are competent (or nothing is required),
        else the reason."""
        bound = self.required(reference, key)
        if bound is None or values is None or values.dropna().empty:
            return ""
        mean = float(values.astype(float).mean())
        ok = mean >= bound if self.side == ">=" else mean <= bound
        return "" if ok else (f"{BASELINE_NOT_COMPETENT}: {self.method} {self.metric} {mean:.2f}, required "
                              f"{SYMBOL[self.side]} {bound:.2f} ({self.words})")


def paper_bptt_length(reference: dict, key: tuple) -> float | None:
    """BPTT_FRACTION of [DNI]'s BPTT length for (task, T), or None where the paper has none."""
    for row in reference["rnn_largest_length"]["rows"]:
        if row["task"] == key[0] and row["method"] == "bptt" and f"T{key[1]}" in row:
            return BPTT_FRACTION * float(row[f"T{key[1]}"])
    return None


def paper_backprop_error(reference: dict, key: tuple) -> float | None:
    """[DNI]'s Table 1 backprop error for (data set, arch, layers) plus BACKPROP_MARGIN, or None."""
    for row in reference["table1"]["rows"]:
        if (row["dataset"], row["arch"], int(row["layers"])) == tuple(key[:3]):
            return float(row["backprop"]) + BACKPROP_MARGIN
    return None


BPTT_COMPETENT = Competence(
    "bptt", "largest_length_solved", ">=",
    f"BPTT's mean largest length is at least {BPTT_FRACTION:g} × [DNI]'s BPTT length at this task and T (recalled)",
    paper_bptt_length)
BACKPROP_COMPETENT = Competence(
    "backprop", "test_error", "<=",
    f"backprop's mean test error is at most [DNI]'s Table 1 backprop error + {BACKPROP_MARGIN:g} points (recalled)",
    paper_backprop_error)


@dataclass(frozen=True)
class ReachesTarget:
    """Time to result's competence: the reference method reaches, in every seed within the budget, the
    target it set itself (its own curve's, feedforward/time_to_result.py). A seed that stopped first
    (diverged) misses it: then 'not within budget' for another method says nothing about that method."""
    method: str
    metric: str
    words: str

    def reason(self, reference: dict, key: tuple, values: pd.Series | None) -> str:
        if values is None or values.dropna().empty or (values < math.inf).all():
            return ""
        return (f"{BASELINE_NOT_COMPETENT}: {self.method} reached its own target in "
                f"{int((values < math.inf).sum())}/{len(values)} seeds ({self.words})")


BACKPROP_REACHES = ReachesTarget("backprop", "seconds_to_target",
                                 "backprop reaches the target, set from its own curve, in every seed within the budget")
