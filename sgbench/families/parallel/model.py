"""Where a net is cut into stages, and the analytic model of a training step's time on K workers.
Torch-free: the tables use it to predict every K from one run's measured unit times."""
from __future__ import annotations

import itertools

from ...catalog import method as method_row


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


def predicted_step_s(method: str, unit_s: list[float], cut_s: list[float], split: list[int], latency_s: float) -> float:
    """Seconds per step on len(split) workers. Locked: every unit in turn, plus one message up and
    one down per cut. Decoupled: the slowest stage (its units, plus the late SG regression at its top
    cut), plus one message each way (sends overlap compute; receives do not)."""
    bounds = stage_bounds(split)
    cuts = len(split) - 1
    if not method_row("parallel", method).uses_sg:  # an unknown method is an error, not the decoupled model
        return sum(unit_s) + 2 * cuts * latency_s
    stage_s = [sum(unit_s[a:b]) + (cut_s[b - 1] if b < len(unit_s) else 0.0) for a, b in bounds]
    return max(stage_s) + (2 * latency_s if cuts else 0.0)
