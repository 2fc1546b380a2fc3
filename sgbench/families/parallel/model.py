"""The analytic model of a step on K workers, and where the stages are cut (torch-free: the tables
use it to predict K up to 16 from the runs' own profiles)."""
from __future__ import annotations

import itertools

from .config import PROTOCOLS, method_spec, unknown_protocol

MAX_PREDICTED_WORKERS = 16


def balanced_split(costs: list[float], workers: int) -> list[int]:
    """Units per worker: the contiguous split whose most expensive stage is cheapest."""
    best = None
    for cuts in itertools.combinations(range(1, len(costs)), workers - 1):
        bounds = (0, *cuts, len(costs))
        worst = max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:]))
        if best is None or worst < best[0]:
            best = (worst, [b - a for a, b in zip(bounds, bounds[1:])])
    return best[1]


def stage_bounds(split: list[int]) -> list[tuple[int, int]]:
    ends = list(itertools.accumulate(split))
    return list(zip([0, *ends[:-1]], ends))




def at_batch(profiles: dict, batch: float) -> list[float]:
    """Per-unit seconds at `batch` examples, linear in the batch size between (and beyond) the two
    profiled sizes; one profile: proportional to the batch size."""
    sizes = sorted(profiles)
    lo, hi = sizes[0], sizes[-1]
    if lo == hi:
        return [max(0.0, t * batch / hi) for t in profiles[hi]]
    return [max(0.0, a + (b - a) * (batch - lo) / (hi - lo)) for a, b in zip(profiles[lo], profiles[hi])]


# One prediction per protocol: (spec, profiles, cut_s, split, batch, latency_s, allreduce_s, microbatches,
# workers, opt_s) -> seconds per step. `profiles`: {batch size: per-unit seconds}; `latency_s`: one
# batch-sized message one way; `allreduce_s`: one all-reduce of every gradient on K workers;
# K = len(split) for stage methods, `workers` for data parallel.
def locked_s(spec, profiles, cut_s, split, batch, latency_s, allreduce_s, microbatches, workers, opt_s) -> float:
    """Every unit in turn, plus one message up and one down per cut."""
    return sum(at_batch(profiles, batch)) + 2 * (len(split) - 1) * latency_s


def pipelined_s(spec, profiles, cut_s, split, batch, latency_s, allreduce_s, microbatches, workers, opt_s) -> float:
    """(M + K - 1) slots of the slowest stage's micro-batch forward and backward (fill and drain), then
    the slowest stage's one optimizer step (`opt_s`: per unit, part of each profiled step), plus a
    micro-batch message each way per cut on the critical path."""
    bounds, cuts = stage_bounds(split), len(split) - 1
    opt = opt_s or [0.0] * len(at_batch(profiles, batch))
    micro = [max(0.0, t - o) for t, o in zip(at_batch(profiles, batch / microbatches), opt)]
    slowest = max(sum(micro[a:b]) for a, b in bounds)
    return (microbatches + cuts) * slowest + max(sum(opt[a:b]) for a, b in bounds) + 2 * cuts * latency_s / microbatches


def data_parallel_s(spec, profiles, cut_s, split, batch, latency_s, allreduce_s, microbatches, workers, opt_s) -> float:
    """The whole net on one share (ddp_split: batch / K; ddp_keep: batch), plus the all-reduce."""
    k = workers or 1
    share = batch / k if spec.batch == "split" else batch
    return sum(at_batch(profiles, share)) + (allreduce_s if k > 1 else 0.0)


def decoupled_s(spec, profiles, cut_s, split, batch, latency_s, allreduce_s, microbatches, workers, opt_s) -> float:
    """The slowest stage (its units, plus the late SG learning at its top cut), plus one message each way
    (sends overlap compute; receives do not)."""
    unit_s = at_batch(profiles, batch)
    stage_s = [sum(unit_s[a:b]) + (cut_s[b - 1] if b < len(unit_s) else 0.0) for a, b in stage_bounds(split)]
    return max(stage_s) + (2 * latency_s if len(split) > 1 else 0.0)


PREDICT = {"locked": locked_s, "pipelined": pipelined_s, "data_parallel": data_parallel_s, "decoupled": decoupled_s}
assert set(PREDICT) == set(PROTOCOLS), "every protocol has its prediction"


def predicted_step_s(method: str, profiles: dict, cut_s: list[float], split: list[int], batch: int,
                     latency_s: float, allreduce_s: float = 0.0, microbatches: int = 1, workers: int | None = None,
                     opt_s: list[float] | None = None) -> float:
    """Seconds per step of `method` on K workers: its protocol's prediction above (an unknown method or
    protocol is an error)."""
    spec = method_spec(method)
    if spec.protocol not in PREDICT:
        raise unknown_protocol(spec.protocol)
    return PREDICT[spec.protocol](spec, profiles, cut_s, split, batch, latency_s, allreduce_s, microbatches, workers,
                                  opt_s)


def allreduce_at(measured_s: float, measured_k: int, k: int) -> float:
    """All-reduce seconds on k workers from one measured on measured_k: a ring all-reduce moves
    2 (k - 1) / k of the gradients through each worker, so its time scales with that factor."""
    if k <= 1 or measured_k <= 1:
        return 0.0
    return measured_s * (2 * (k - 1) / k) / (2 * (measured_k - 1) / measured_k)
