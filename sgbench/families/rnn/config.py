"""The RNN run's settings (one dataclass): copy / repeat copy, truncation T, BPTT vs DNI vs DNI+Aux.
Torch-free: the workflow expands grids of it without loading torch."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...catalog import RNN_METHODS as METHODS
from ...catalog import TASKS, TIERS
from ...config import RunConfig

# Fields that do not change the numbers a run computes.
NON_RESULT_FIELDS = {"device", "threads"}


@dataclass
class RNNConfig(RunConfig):
    """Every setting of an RNN run. Where [DNI] gives no value, the choice is sgbench's (marked)."""
    task: str = "copy"                  # copy | repeat_copy
    method: str = "dni"                 # bptt | dni | dni_aux
    T: int = 3                          # truncation: steps per window ([DNI] grid: 2, 3, 4, 5, 8)
    seed: int = 0                       # seeds the weights and the episode streams
    timesteps: int = 200_000            # budget: time steps read per stream
    batch_size: int = 16                # parallel streams (sgbench's choice)
    hidden_size: int = 256              # LSTM units (sgbench's choice)
    lr: float = 1e-3                    # Adam (sgbench's choice)
    sg_hidden_layers: int = 0           # 0: linear SG in the state, as in [DNI]
    sg_hidden_dim: int = 256            # SG model hidden units (with sg_hidden_layers > 0)
    sg_scale: float = 0.5               # sgbench's choice: at 1.0 the bootstrapped SG diverged (see README)
    sg_loss_weight: float = 1.0         # weight of the SG model's regression loss
    aux_weight: float = 1.0             # dni_aux: weight of the auxiliary L2 loss
    threshold: float = 0.15             # bits per sequence to pass a level (recalled, [Graves14]-style)
    curriculum_window: int = 100        # episodes averaged for the curriculum test
    repeat_norm: float = 10.0           # repeat copy: the count channel holds R / repeat_norm
    log_points: int = 50                # points per curve
    probe_every: int = 0                # dni/dni_aux: SG fidelity probe every n time steps (0: off)
    probe_horizon: int = 8              # the probe's exact gradient: losses of this many windows ahead
    tier: str = "custom"                # label only: smoke | quick | paper | custom
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    threads: int = 0                    # torch CPU threads (0: torch's default)

    CHOICES = {"task": TASKS, "method": METHODS, "tier": TIERS}

    def resolved(self) -> "RNNConfig":
        """Check every value; raises ValueError naming the fix."""
        c = dataclasses.replace(self)
        c.check([
            (c.T >= 1, f"T (truncation length) must be >= 1, got {c.T}"),
            (c.timesteps >= c.T, f"timesteps must be >= T, got {c.timesteps}"),
            (c.batch_size >= 2, f"batch_size must be >= 2, got {c.batch_size}"),
            (c.hidden_size >= 1 and c.sg_hidden_dim >= 1, "hidden_size and sg_hidden_dim must be >= 1"),
            (c.lr > 0, f"lr must be > 0, got {c.lr}"),
            (c.sg_hidden_layers >= 0, f"sg_hidden_layers must be >= 0, got {c.sg_hidden_layers}"),
            (c.threshold > 0 and c.curriculum_window >= 1, "threshold must be > 0 and curriculum_window >= 1"),
            (c.repeat_norm > 0 and c.log_points >= 1, "repeat_norm must be > 0 and log_points >= 1"),
            (c.probe_every >= 0 and c.probe_horizon >= 1, "probe_every must be >= 0 (0: off) and probe_horizon >= 1"),
            (c.probe_every == 0 or c.method != "bptt",
             "the SG probe needs a synthetic gradient: method dni or dni_aux, or probe_every 0"),
        ])
        return c


def run_name(p: dict) -> str:
    """The pipeline's name of a run: copy-T2-dni-seed0."""
    return f"{p['task']}-T{p['T']}-{p['method']}-seed{p['seed']}"
