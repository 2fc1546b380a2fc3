"""The parallel-workers run's settings: a feed-forward run split over K processes. Torch-free."""
from __future__ import annotations

from dataclasses import dataclass

from ...catalog import PARALLEL_METHODS
from ...runtime import RunError
from ..feedforward.config import FFConfig


class ParallelRunError(RunError):
    """A worker failed or was killed; the message names it."""


@dataclass
class ParallelConfig(FFConfig):
    """A feed-forward run on `workers` processes. The FFConfig fields keep their meaning; complete
    unlock and asynchronous updates are not part of this experiment."""
    method: str = "cdni"                # backprop (single process / locked pipeline) | dni | cdni
    workers: int = 2                    # K: stages, one process each
    split: list[int] | None = None      # units (blocks, then the head) per worker; None: balanced by FLOPs
    target_error: float = 10.0          # % test error for time-to-target
    threads: int = 1                    # torch CPU threads per worker
    peer_timeout_s: int = 600           # a worker waiting this long for a neighbour gives up

    CHOICES = {**FFConfig.CHOICES, "method": PARALLEL_METHODS}

    def resolved(self) -> "ParallelConfig":
        c = super().resolved()
        units = c.layers + 1
        c.check([
            (c.update_prob == 1 and c.update_periods is None,
             "update_prob / update_periods do not apply to parallel runs (every stage updates every step)"),
            (c.dni_placement == "every" and c.warmup == 0 and c.probe_every == 0,
             "dni_placement, warmup and probe_every (diagnostics) do not apply to parallel runs: use train-ff"),
            (1 <= c.workers <= units, f"workers must be between 1 and the number of units "
             f"(layers + head = {units}), got {c.workers}"),
            (c.split is None or (len(c.split) == c.workers and all(n >= 1 for n in c.split) and sum(c.split) == units),
             f"split gives the units (blocks, then the head) per worker: {c.workers} numbers >= 1 summing to "
             f"{units}, got {c.split}"),
            (0 < c.target_error < 100, f"target_error is a test error in %, got {c.target_error}"),
            (c.threads >= 1, "threads (per worker) must be >= 1"),
            (c.peer_timeout_s >= 10, "peer_timeout_s must be >= 10"),
        ])
        return c


def run_name(p: dict) -> str:
    """The pipeline's name of a run on K workers: mnist-fcn3-cdni-k2-seed0."""
    return f"{p['dataset']}-{p['arch']}{p['layers']}-{p['method']}-k{p['workers']}-seed{p['seed']}"
