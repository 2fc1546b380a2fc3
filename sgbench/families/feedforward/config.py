"""The feed-forward run's settings (one dataclass): [DNI] Table 1, complete unlock, asynchronous
updates and the diagnostics. Torch-free: the workflow expands grids of it without loading torch."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ...catalog import (
    ADAM_IMPLS,
    ARCHS,
    DATASETS,
    PLACEABLE_METHODS,
    PLACEMENTS,
    PRECISIONS,
    SG_METHODS,
    STEP_MODES,
    TIERS,
    UNLOCK_METHODS,
    default_input_hidden,
    default_sg_hidden_dim,
    paper_sg_hidden_layers,
)
from ...catalog import FF_METHODS as METHODS
from ...config import RunConfig, adam_tag, precision_tag

# Fields that do not change the numbers a run computes (a checkpoint made with other values resumes).
NON_RESULT_FIELDS = {"device", "data_root", "download", "threads"}


@dataclass
class FFNetConfig(RunConfig):
    """What training a feed-forward net takes, in one process (FFConfig) or on K workers
    (parallel.ParallelConfig): net, data, optimizer, budget, device. Defaults are the paper's ([DNI]
    supplement)."""
    dataset: str = "mnist"              # mnist | cifar10 | cifar10-jpeg
    arch: str = "fcn"                   # fcn | cnn
    layers: int = 3                     # hidden layers
    method: str = "dni"                 # a feedforward row of sgbench.catalog.METHODS
    seed: int = 0                       # seeds the weights, the batch order and the update coins
    iterations: int = 500_000           # training steps (the paper's 500k take hours on a CPU)
    batch_size: int = 256               # examples per step
    lr: float = 3e-5                    # Adam
    lr_milestones: list[float] = field(default_factory=lambda: [0.6, 0.8])  # fractions of iterations
    lr_gamma: float = 0.1               # the learning rate is multiplied by this at each milestone
    sg_hidden_layers: int | None = None  # None: paper's choice (FCN: DNI 2, cDNI 0; CNN: 2)
    sg_hidden_dim: int | None = None     # None: 1024 units (FCN) / 128 channels (CNN)
    sg_loss_weight: float = 1.0         # weight of the SG models' regression loss
    sg_scale: float = 1.0               # the synthetic gradient is multiplied by this before use
    input_hidden_layers: int | None = None  # unlock input models; None: 1 (FCN and CNN)
    input_hidden_dim: int | None = None     # None: 1024 units (FCN) / 128 channels (CNN)
    probe_size: int = 256               # probe batch: the first N training examples (every class in its share)
    eval_every: int = 0                 # 0: 20 evaluations over the run
    train_limit: int = 0                # train on N training examples, every class in its share (0: all)
    test_limit: int = 0                 # evaluate on N test examples, every class in its share (0: all)
    val_size: int | None = None         # validation hold-out from the training set (None: 10,000; 0: none)
    tier: str = "custom"                # label only: the tier that ran it
    precision: str = "fp32"             # bf16: autocast around each forward (CPU too); tf32: TF32 matmuls (CUDA)
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    data_root: str | None = None        # else $SGBENCH_DATA, else ./data
    download: bool = False              # let torchvision download when the data is missing
    threads: int = 0                    # torch CPU threads (0: torch's default)
    seeds: list[int] | None = None      # train these seeds in one process as one batch (FCN; see .seeds)

    CHOICES = {"dataset": DATASETS, "arch": ARCHS, "method": METHODS, "tier": TIERS, "precision": PRECISIONS}
    THREADS_MIN, THREADS_NOTE = 0, "0: torch's default"  # torch.set_num_threads needs >= 1; 0 does not call it

    def resolved(self):
        """Check every value and fill in the derived defaults; raises ValueError naming the fix."""
        c = dataclasses.replace(self)
        c.check(c.rules())
        c.fill_defaults()
        return c

    def rules(self) -> list[tuple[bool, str]]:
        """(ok, message): the checks of these fields (a subclass adds its own)."""
        c = self
        return [
            (c.layers >= 1, f"layers must be >= 1, got {c.layers}"),
            (c.iterations >= 1, f"iterations must be >= 1, got {c.iterations}"),
            (c.batch_size >= 2, f"batch_size must be >= 2 (batch norm needs it), got {c.batch_size}"),
            (c.lr > 0, f"lr must be > 0, got {c.lr}"),
            (all(0 < m < 1 for m in c.lr_milestones), f"lr_milestones are fractions in (0, 1), got {c.lr_milestones}"),
            (c.sg_hidden_layers is None or c.sg_hidden_layers >= 0, "sg_hidden_layers must be >= 0"),
            (c.input_hidden_layers is None or c.input_hidden_layers >= 0, "input_hidden_layers must be >= 0"),
            (all(d is None or d >= 1 for d in (c.sg_hidden_dim, c.input_hidden_dim)),
             "sg_hidden_dim and input_hidden_dim must be >= 1"),
            (c.eval_every >= 0 and c.train_limit >= 0 and c.test_limit >= 0, "eval_every, train_limit, test_limit must be >= 0"),
            (c.val_size is None or c.val_size >= 0, f"val_size must be >= 0 (0: no validation hold-out), got {c.val_size}"),
            (c.threads >= c.THREADS_MIN, f"threads must be >= {c.THREADS_MIN} ({c.THREADS_NOTE}), got {c.threads}"),
            (c.probe_size >= 2, f"probe_size must be >= 2 (batch norm needs it), got {c.probe_size}"),
            (c.seeds is None or (len(c.seeds) == len(set(c.seeds)) >= 1 and min(c.seeds) >= 0),
             f"seeds must be distinct seeds >= 0 (one run each), got {c.seeds}"),
        ]

    def fill_defaults(self) -> None:
        """The derived defaults (the paper's SG and input-model sizes, 20 evaluations)."""
        c = self
        if c.sg_hidden_layers is None and c.method in SG_METHODS:
            c.sg_hidden_layers = paper_sg_hidden_layers(c.arch, c.method)
        if c.sg_hidden_dim is None and c.method in SG_METHODS:
            c.sg_hidden_dim = default_sg_hidden_dim(c.arch)
        if c.method in UNLOCK_METHODS:
            default_layers, default_dim = default_input_hidden(c.arch)
            c.input_hidden_layers = default_layers if c.input_hidden_layers is None else c.input_hidden_layers
            c.input_hidden_dim = c.input_hidden_dim or default_dim
        if c.eval_every == 0:
            c.eval_every = max(1, math.ceil(c.iterations / 20))
        c.lr_milestones = [float(m) for m in c.lr_milestones]


@dataclass
class FFConfig(FFNetConfig):
    """Every setting of a feed-forward run: the shared ones, and those of one process only (random
    and periodic updates, DNI placement and warm-up, the SG probe, the fast step)."""
    update_prob: float = 1.0            # each step each layer updates with this probability (1: always)
    update_periods: list[int] | None = None  # layer k updates every n_k steps; one per layer, head last
    dni_placement: str = "every"        # dni/cdni: every | every_second | middle boundary (others exact)
    warmup: float = 0.0                 # dni/cdni: fraction of iterations of exact backprop first (SGs learn)
    probe_every: int = 0                # SG fidelity probe every n steps (0: off)
    step: str = "eager"                 # eager | fused | captured (CUDA graph) | auto: see sgbench.fast
    adam: str = "for-loop"              # for-loop: torch's single-tensor Adam numbers | fused: its one-pass kernel

    CHOICES = {**FFNetConfig.CHOICES, "dni_placement": PLACEMENTS, "step": STEP_MODES, "adam": ADAM_IMPLS}
    # a run recorded before the adam setting existed ran the for-loop Adam (RunConfig.as_recorded)
    ADDED = {**FFNetConfig.ADDED, "adam": "for-loop"}

    def rules(self) -> list[tuple[bool, str]]:
        c = self
        return super().rules() + [
            (0 < c.update_prob <= 1, f"update_prob must be in (0, 1] (1: every layer updates every step), got {c.update_prob}"),
            (c.update_periods is None or len(c.update_periods) == c.layers + 1,
             f"update_periods needs one period per layer, the output layer last: {c.layers + 1} values "
             f"for layers={c.layers}, got {c.update_periods}"),
            (c.update_periods is None or all(n >= 1 for n in c.update_periods),
             f"update_periods are steps between a layer's updates, each >= 1, got {c.update_periods}"),
            (c.dni_placement == "every" or c.method in PLACEABLE_METHODS,
             f"dni_placement {c.dni_placement!r} needs method {' or '.join(PLACEABLE_METHODS)} (got {c.method!r}); "
             "use dni_placement every"),
            (0 <= c.warmup <= 1, f"warmup is a fraction of the iterations in [0, 1], got {c.warmup}"),
            (c.warmup == 0 or c.method in PLACEABLE_METHODS,
             f"warmup needs method {' or '.join(PLACEABLE_METHODS)} (got {c.method!r}); use warmup 0"),
            (c.probe_every >= 0, f"probe_every must be >= 0 (0: no probe), got {c.probe_every}"),
            (c.probe_every == 0 or c.method in PLACEABLE_METHODS,
             f"the SG probe needs method {' or '.join(PLACEABLE_METHODS)} (got {c.method!r}); use probe_every 0"),
        ]


def run_name(p: dict) -> str:
    """The pipeline's name of a run: mnist-fcn3-dni-seed0; an update probability below 1 is part of it:
    mnist-fcn3-dni-p0.2-seed0, and so are a precision other than fp32 and the fused Adam:
    mnist-fcn3-dni-bf16-fused-adam-seed0."""
    prob = "" if p.get("update_prob", 1.0) == 1.0 else f"-p{p['update_prob']:g}"
    return (f"{p['dataset']}-{p['arch']}{p['layers']}-{p['method']}{prob}{precision_tag(p)}{adam_tag(p)}"
            f"-seed{p['seed']}")
