"""The RNN run's settings (one dataclass): copy / repeat copy, truncation T, BPTT vs DNI vs DNI+Aux vs
BP(λ). Torch-free: the workflow expands grids of it without loading torch."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...catalog import RNN_METHODS as METHODS
from ...catalog import PRECISIONS, TASKS, TIERS
from ...config import RunConfig, precision_tag

LAYOUTS = ("paper", "legacy")   # sgbench.tasks: where the outputs start (the lag of every dependency)
SCHEDULES = ("upto", "fixed")   # sgbench.tasks: lengths drawn up to the level, or all at the level
STREAMS = ("desync", "lockstep")  # sgbench.tasks.EpisodeStream(desync=...)
THRESHOLD_UNITS = ("sequence", "vector")  # sgbench.tasks.Curriculum(unit=...)


# Fields that do not change the numbers a run computes.
NON_RESULT_FIELDS = {"device", "threads", "checkpoint_every_s"}


@dataclass
class RNNConfig(RunConfig):
    """Every setting of an RNN run. Where [DNI] gives no value, the choice is sgbench's (marked)."""
    task: str = "copy"                  # copy | repeat_copy
    method: str = "dni"                 # bptt | dni | dni_aux | dni_bpl
    T: int = 3                          # truncation: steps per window ([DNI] grid: 2, 3, 4, 5, 8)
    seed: int = 0                       # seeds the weights and the episode streams
    timesteps: int = 200_000            # budget: time steps read per stream
    layout: str = "paper"               # paper: outputs from the delimiter step (lag N); legacy: lag N + 1
    schedule: str = "upto"              # upto: episode lengths drawn from 1..level; fixed: all at the level
    streams: str = "desync"             # desync: each stream starts at a random point of its first episode;
                                        # lockstep: all start together (sgbench's first version)
    batch_size: int = 16                # parallel streams (sgbench's choice)
    hidden_size: int = 256              # LSTM units (sgbench's choice)
    forget_bias: float = 1.0            # initial forget-gate bias (sgbench's choice; a common LSTM default)
    lr: float = 1e-3                    # Adam, the network (sgbench's choice; [BPλ]'s code: 1e-3)
    sg_lr: float = 1e-5                 # Adam, the SG model: its own rate ([BPλ]'s code: 1e-5)
    # (at the network's 1e-3 the SG diverges at H = 256: results/reference/rnn-setup/, issue #24)
    clip: float = 0.0                   # clip the gradient norm of every update to this (0: off)
    sg_hidden_layers: int = 0           # 0: linear SG in the state, as in [DNI]
    sg_hidden_dim: int = 256            # SG model hidden units (with sg_hidden_layers > 0)
    sg_scale: float = 0.1               # the injected SG is scaled by this ([DNI] 0.1: recalled second-hand)
    sg_discount: float = 0.9            # γ: per-window discount inside the SG's bootstrapped target
                                        # (sgbench's choice; [BPλ]'s code uses 0.9)
    sg_loss_weight: float = 1.0         # weight of the SG model's regression loss
    aux_weight: float = 1.0             # dni_aux: weight of the auxiliary L2 loss
    bpl_lambda: float = 0.5             # dni_bpl: λ of the λ-return (0: dni's bootstrap, 1: Monte Carlo)
    bpl_horizon: int = 4                # dni_bpl: windows the λ-return looks ahead before bootstrapping
    threshold: float = 0.15             # error to pass a level (recalled, [Graves14]-style), in the unit:
    threshold_unit: str = "sequence"    # sequence: bits per sequence; vector: bits per output vector
    curriculum_window: int = 100        # episodes averaged for the curriculum test
    repeat_norm: float = 10.0           # repeat copy: the count channel holds R / repeat_norm
    log_points: int = 50                # points per curve
    checkpoint_every_s: float = 60.0    # checkpoint at a logged point once this many seconds have passed
                                        # since the last checkpoint (0: at every logged point), and at the end
    probe_every: int = 0                # SG methods: SG fidelity probe every n time steps (0: off)
    probe_horizon: int = 8              # the probe's exact gradient: losses of this many windows ahead
    tier: str = "custom"                # label only: the tier that ran it
    precision: str = "fp32"             # bf16: autocast around each forward (CPU too); tf32: TF32 matmuls (CUDA)
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    threads: int = 0                    # torch CPU threads (0: torch's default)

    CHOICES = {"task": TASKS, "method": METHODS, "tier": TIERS, "precision": PRECISIONS, "layout": LAYOUTS,
               "schedule": SCHEDULES, "streams": STREAMS, "threshold_unit": THRESHOLD_UNITS}

    def resolved(self) -> RNNConfig:
        """Check every value; raises ValueError naming the fix."""
        c = dataclasses.replace(self)
        c.check([
            (c.T >= 1, f"T (truncation length) must be >= 1, got {c.T}"),
            (c.timesteps >= c.T, f"timesteps must be >= T, got {c.timesteps}"),
            (c.batch_size >= 2, f"batch_size must be >= 2, got {c.batch_size}"),
            (c.hidden_size >= 1 and c.sg_hidden_dim >= 1, "hidden_size and sg_hidden_dim must be >= 1"),
            (c.lr > 0, f"lr must be > 0, got {c.lr}"),
            (c.sg_lr > 0, f"sg_lr (the SG model's Adam rate) must be > 0, got {c.sg_lr}"),
            (c.clip >= 0, f"clip must be >= 0 (0: off), got {c.clip}"),
            (c.sg_hidden_layers >= 0, f"sg_hidden_layers must be >= 0, got {c.sg_hidden_layers}"),
            (c.sg_scale >= 0 and c.sg_discount >= 0, "sg_scale and sg_discount must be >= 0"),
            (0 <= c.bpl_lambda <= 1 and c.bpl_horizon >= 1, "bpl_lambda must be in [0, 1] and bpl_horizon >= 1"),
            (c.threshold > 0 and c.curriculum_window >= 1, "threshold must be > 0 and curriculum_window >= 1"),
            (c.repeat_norm > 0 and c.log_points >= 1, "repeat_norm must be > 0 and log_points >= 1"),
            (c.checkpoint_every_s >= 0, f"checkpoint_every_s must be >= 0 (0: at every logged point), "
                                        f"got {c.checkpoint_every_s}"),
            (c.probe_every >= 0 and c.probe_horizon >= 1, "probe_every must be >= 0 (0: off) and probe_horizon >= 1"),
            (c.threads >= 0, f"threads must be >= 0 (0: torch's default), got {c.threads}"),
            (c.probe_every == 0 or c.method != "bptt",
             "the SG probe needs a synthetic gradient: method dni, dni_aux or dni_bpl, or probe_every 0"),
        ])
        return c


def run_name(p: dict) -> str:
    """The pipeline's name of a run: copy-T2-dni-seed0."""
    return f"{p['task']}-T{p['T']}-{p['method']}{precision_tag(p)}-seed{p['seed']}"
