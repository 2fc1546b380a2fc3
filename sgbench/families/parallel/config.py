"""The parallel-workers run's settings and its methods' protocols: a feed-forward run on K
processes. Torch-free. How each protocol shares the work is described in run.py."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...catalog import PARALLEL_METHODS
from ...catalog import method as catalog_method
from ...config import precision_tag
from ...runtime import RunError
from ..feedforward.config import FFConfig, FFNetConfig


class ParallelRunError(RunError):
    """A worker failed or was killed; the message names it."""


PROTOCOLS = ("locked", "pipelined", "data_parallel", "decoupled")  # run.py's docstring says each in full
SCHEDULES = ("gpipe", "1f1b")     # pipelined
BATCHES = ("split", "keep")       # data_parallel


def unknown_protocol(protocol: str) -> ValueError:
    """The error for a protocol no code path knows (never routed to another protocol's code)."""
    return ValueError(f"unknown parallel protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


@dataclass(frozen=True)
class Protocol:
    """How one method shares the work among the K workers (run.py's docstring says each in full)."""
    protocol: str           # locked | pipelined | data_parallel | decoupled
    net: str                # what the feed-forward net is built as: backprop | dni | cdni
    schedule: str = ""      # pipelined: gpipe | 1f1b
    batch: str = "split"    # data_parallel: split (global batch cut into K shares) | keep (per worker)
    words: str = ""

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise unknown_protocol(self.protocol)
        if (self.protocol == "pipelined") != (self.schedule in SCHEDULES):
            raise ValueError(f"a pipelined protocol names its schedule, one of {', '.join(SCHEDULES)} (and only "
                             f"it does); got protocol {self.protocol!r}, schedule {self.schedule!r}")
        if self.batch not in BATCHES:
            raise ValueError(f"unknown data-parallel batch {self.batch!r}; choose one of {', '.join(BATCHES)}")

    @property
    def staged(self) -> bool:
        """The net is cut into K stages, one per worker (else every worker holds all of it: data parallel)."""
        return self.protocol != "data_parallel"


METHODS: dict[str, Protocol] = {
    "backprop": Protocol("locked", "backprop", words="K = 1: single-process backprop; K > 1: the naive locked pipeline"),
    "gpipe": Protocol("pipelined", "backprop", schedule="gpipe", words="micro-batched pipeline, all forwards then all backwards"),
    "1f1b": Protocol("pipelined", "backprop", schedule="1f1b", words="micro-batched pipeline, one forward one backward"),
    "ddp_split": Protocol("data_parallel", "backprop", batch="split", words="data parallel, the global batch split over K"),
    "ddp_keep": Protocol("data_parallel", "backprop", batch="keep", words="data parallel, each worker a full batch"),
    "dni": Protocol("decoupled", "dni", words="a DNI after every block, stages update-unlocked"),
    "cdni": Protocol("decoupled", "cdni", words="a label-conditioned DNI after every block, stages update-unlocked"),
}
LATE_SG = ("reevaluate", "stored")


def method_spec(name: str) -> Protocol:
    """The method's protocol row; an unknown name is an error naming the valid ones (never another
    method's code)."""
    catalog_method("parallel", name)  # the catalog's error for a name it does not know
    return METHODS[name]




@dataclass
class ParallelConfig(FFNetConfig):
    """A feed-forward run on `workers` processes: what it shares with one process (FFNetConfig: net,
    data, optimizer, budget) keeps its meaning; random updates, DNI placement, the SG probe and the
    fast step are FFConfig's alone."""
    method: str = "cdni"                # a name in METHODS
    workers: int = 2                    # K: processes
    split: list[int] | None = None      # stage methods: units (blocks, then the head) per worker; None: by FLOPs
    targets: list[float] = dataclasses.field(default_factory=lambda: [10.0])  # % test errors for time-to-target
    microbatches: int = 4               # gpipe / 1f1b: micro-batches per batch (must divide batch_size)
    late_sg: str = "reevaluate"         # dni / cdni: how a cut's SG model learns from the late gradient
    threads: int = 1                    # torch CPU threads per worker
    peer_timeout_s: int = 600           # a worker waiting this long for a neighbour gives up
    save_params: bool = False           # each worker writes params-<rank>.pt: its final parameters and the
                                        # last step's gradients (for checks against one process)

    CHOICES = {**FFNetConfig.CHOICES, "method": PARALLEL_METHODS, "late_sg": LATE_SG}
    THREADS_MIN, THREADS_NOTE = 1, "per worker"  # each worker sets its own
    # Until issue #22 this class inherited FFConfig and refused these six fields unless they held these
    # values, so every parallel metrics.json of that time (results/reference) records them so. Such a
    # config still loads and still is the same run for the finished-run check; another value is refused.
    LEGACY = {"update_prob": 1.0, "update_periods": None, "dni_placement": "every", "warmup": 0.0,
              "probe_every": 0, "step": "eager"}

    def resolved(self) -> "ParallelConfig":
        c = super().resolved()
        spec = METHODS[c.method]
        units = c.layers + 1
        staged = spec.protocol != "data_parallel"
        c.check([
            (not staged or 1 <= c.workers <= units, f"workers must be between 1 and the number of units "
             f"(layers + head = {units}) for {c.method}, got {c.workers}"),
            (c.workers >= 1, f"workers must be >= 1, got {c.workers}"),
            (c.split is None or (staged and len(c.split) == c.workers and all(n >= 1 for n in c.split)
                                 and sum(c.split) == units),
             f"split gives the units (blocks, then the head) per worker of a stage method: {c.workers} "
             f"numbers >= 1 summing to {units}, got {c.split} for {c.method}"),
            (len(c.targets) >= 1 and all(0 < t < 100 for t in c.targets),
             f"targets are test errors in % (0 < t < 100), at least one, got {c.targets}"),
            (c.threads >= 1, "threads (per worker) must be >= 1"),
            (c.peer_timeout_s >= 10, "peer_timeout_s must be >= 10"),
            (c.microbatches >= 1, f"microbatches must be >= 1, got {c.microbatches}"),
            (spec.protocol != "pipelined" or (c.batch_size % c.microbatches == 0
                                              and c.batch_size // c.microbatches >= 2),
             f"{c.method}: microbatches must divide batch_size into micro-batches of >= 2 examples (batch "
             f"norm), got batch_size {c.batch_size}, microbatches {c.microbatches}"),
            (spec.protocol != "data_parallel" or spec.batch == "keep"
             or (c.batch_size % c.workers == 0 and c.batch_size // c.workers >= 2),
             f"ddp_split cuts batch_size into {c.workers} shares of >= 2 examples: use a batch_size divisible "
             f"by workers, got {c.batch_size}"),
            (c.late_sg == "reevaluate" or spec.protocol == "decoupled",
             f"late_sg applies to dni / cdni only; leave it at 'reevaluate' for {c.method}"),
        ])
        c.targets = sorted({float(t) for t in c.targets}, reverse=True)
        return c

    @property
    def spec(self) -> Protocol:
        return method_spec(self.method)

    def net_config(self) -> FFConfig:
        """The one-process config of its net (every worker builds the whole net, then keeps its part):
        the shared fields, the method's net (backprop | dni | cdni); FFConfig's own at their defaults
        (every layer updates every step, a DNI at every boundary, the eager step)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(FFNetConfig)}
        return FFConfig(**(shared | {"method": self.spec.net}))

    def global_batch(self, n_train: int) -> int:
        """Examples per optimizer step over all workers."""
        per = min(self.batch_size, n_train)
        return per * self.workers if self.spec.batch == "keep" and self.spec.protocol == "data_parallel" else per


# The catalog names the methods; this table says how each runs. They must list the same names.
assert set(METHODS) == set(PARALLEL_METHODS), "sgbench.catalog and the parallel protocols disagree"


def run_name(p: dict) -> str:
    """The pipeline's name of a run on K workers: mnist-fcn3-cdni-k2-seed0 (-stored for the stored
    late-SG variant; a non-default micro-batch count is named too)."""
    extra = "-stored" if p.get("late_sg", "reevaluate") == "stored" else ""
    if METHODS[p["method"]].protocol == "pipelined" and p.get("microbatches", 4) != 4:
        extra += f"-m{p['microbatches']}"
    extra += f"-k{p['workers']}{precision_tag(p)}"
    return f"{p['dataset']}-{p['arch']}{p['layers']}-{p['method']}{extra}-seed{p['seed']}"
