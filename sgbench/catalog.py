"""What sgbench knows by name, as data in one place: methods, architectures, data sets, tasks, tiers.

Torch-free: the workflow, the command line's help and the report read it without loading torch.
Every family's config, runner, tables and schema take their names from here (a test checks the
JSON schemas' enums against it), so a new method is one row below, not a string switch elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One training method of one family, described by what it does (not by where its code is)."""
    name: str
    family: str                 # feedforward | rnn | parallel
    uses_sg: bool = False       # a DNI boundary injects synthetic gradients
    conditioned: bool = False   # SG (and input) models also see the label (cDNI)
    unlock: bool = False        # layers also train on predicted inputs (complete unlock)
    trains_hidden: bool = True  # hidden layers learn (False: the paper's no-bprop lower bound)
    label: str = ""             # how tables and the report name it
    sg_rule: str = ""           # how the SG model learns (a name in SG_RULES); "" when uses_sg is False
    aux: bool = False           # RNN: an auxiliary head also predicts the boundary's future SG ([DNI] Aux)
    placeable: bool = False     # feed-forward: DNIs may sit at some boundaries only, warm up, be probed
    stackable: bool = False     # feed-forward: several seeds can train as one batch (sgbench.fast)
    table1: bool = False        # a column of [DNI] Table 1 (feed-forward tables and figure)
    baseline: bool = False      # the family's reference method: tables, targets and ratios are taken against it

    def __post_init__(self):
        if self.uses_sg != bool(self.sg_rule) or (self.sg_rule and self.sg_rule not in SG_RULES):
            raise ValueError(f"method {self.family}/{self.name}: a method that uses an SG names its rule, "
                             f"one of {', '.join(SG_RULES)} (and only such a method does); got {self.sg_rule!r}")


# How a boundary's SG model learns: "bootstrap" regresses it on the gradient arriving from the next
# layer / window (sgbench.dni.BootstrapL2); "bp_lambda" on BP(λ)'s λ-return over bpl_horizon windows
# (sgbench.dni.BPLambda; recurrent boundaries).
SG_RULES = ("bootstrap", "bp_lambda")


METHODS: tuple[Method, ...] = (
    # Feed-forward ([DNI] Sec. 3.3 Table 1, Sec. 3.4 complete unlock)
    Method("backprop", "feedforward", label="Bprop", stackable=True, table1=True, baseline=True),
    Method("dni", "feedforward", uses_sg=True, sg_rule="bootstrap", placeable=True, stackable=True, table1=True,
           label="DNI"),
    Method("cdni", "feedforward", uses_sg=True, sg_rule="bootstrap", conditioned=True, placeable=True,
           stackable=True, table1=True, label="cDNI"),
    Method("no_bprop", "feedforward", trains_hidden=False, stackable=True, table1=True, label="No Bprop"),
    Method("unlock", "feedforward", uses_sg=True, sg_rule="bootstrap", unlock=True, label="unlock"),
    Method("cunlock", "feedforward", uses_sg=True, sg_rule="bootstrap", conditioned=True, unlock=True,
           label="cunlock"),
    # RNN ([DNI] Sec. 3.1): truncated BPTT, with a DNI at the window boundary, plus the aux task
    Method("bptt", "rnn", label="BPTT", baseline=True),
    Method("dni", "rnn", uses_sg=True, sg_rule="bootstrap", label="DNI"),
    Method("dni_aux", "rnn", uses_sg=True, sg_rule="bootstrap", aux=True, label="DNI + Aux"),
    Method("dni_bpl", "rnn", uses_sg=True, sg_rule="bp_lambda", label="BP(λ)"),
    # Character-level language modelling ([DNI] Sec. 3.1): the same four, on text
    Method("bptt", "charlm", label="BPTT", baseline=True),
    Method("dni", "charlm", uses_sg=True, sg_rule="bootstrap", label="DNI"),
    Method("dni_aux", "charlm", uses_sg=True, sg_rule="bootstrap", aux=True, label="DNI + Aux"),
    Method("dni_bpl", "charlm", uses_sg=True, sg_rule="bp_lambda", label="BP(λ)"),
    # Parallel workers: K processes (how each shares the work: sgbench/families/parallel/config.py)
    Method("backprop", "parallel", label="locked backprop", baseline=True),
    Method("gpipe", "parallel", label="GPipe"),
    Method("1f1b", "parallel", label="1F1B"),
    Method("ddp_split", "parallel", label="DDP, batch split"),
    Method("ddp_keep", "parallel", label="DDP, batch per worker"),
    Method("dni", "parallel", uses_sg=True, sg_rule="bootstrap", label="DNI"),
    Method("cdni", "parallel", uses_sg=True, sg_rule="bootstrap", conditioned=True, label="cDNI"),
)


def methods(family: str, **where) -> tuple[str, ...]:
    """Names of a family's methods, in table order, optionally filtered: methods("feedforward", unlock=True)."""
    return tuple(m.name for m in METHODS
                 if m.family == family and all(getattr(m, k) == v for k, v in where.items()))


def baseline(family: str) -> str:
    """The family's reference method (exactly one row per family says baseline=True)."""
    (name,) = methods(family, baseline=True)
    return name


def method(family: str, name: str) -> Method:
    """The method row; an unknown name is an error naming the valid ones (never a fallback)."""
    for m in METHODS:
        if m.family == family and m.name == name:
            return m
    raise ValueError(f"unknown {family} method {name!r}; choose one of {', '.join(methods(family))}")


FF_METHODS = methods("feedforward")
TABLE1_METHODS = methods("feedforward", table1=True)               # [DNI] Table 1's columns
SG_METHODS = methods("feedforward", uses_sg=True)                   # a DNI after every hidden block
CONDITIONED_METHODS = methods("feedforward", conditioned=True)
UNLOCK_METHODS = methods("feedforward", unlock=True)
PLACEABLE_METHODS = methods("feedforward", placeable=True)          # dni_placement, warmup, probe_every
STACKED_METHODS = methods("feedforward", stackable=True)            # seeds as one batch (sgbench.fast)
RNN_METHODS = methods("rnn")
CHARLM_METHODS = methods("charlm")
PARALLEL_METHODS = methods("parallel")

ARCHS = ("fcn", "cnn")
PLACEMENTS = ("every", "every_second", "middle")      # where DNI boundaries sit (dni / cdni)
DATASETS = ("mnist", "cifar10", "cifar10-jpeg")
TASKS = ("copy", "repeat_copy")
TIERS = ("smoke", "quick", "long", "rnn", "paper", "gpu", "custom")  # the `tier` label every run config takes
# How a feed-forward step runs (sgbench.fast): eager (default), fused, captured (CUDA graph), auto
STEP_MODES = ("eager", "fused", "captured", "auto")
# A run's arithmetic (issue #26): fp32; bf16 autocast around each step's forward (any device); tf32 matmuls (CUDA).
PRECISIONS = ("fp32", "bf16", "tf32")
# Adam's implementation in a feed-forward run (sgbench.fast.make_optimizer): for-loop (torch's single-tensor
# arithmetic, bit for bit; the default, every committed run's) or fused (torch's one-pass kernel).
ADAM_IMPLS = ("for-loop", "fused")


def by_arch(arch: str, values: dict):
    """values[arch] for an arch of ARCHS (values names each); an unknown arch is an error naming them."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return values[arch]


def paper_sg_hidden_layers(arch: str, method: str) -> int:
    # [DNI] supplement: FCN DNI uses a 2x1024 MLP SG, FCN cDNI a linear one on [h; label];
    # the CNN SG has 2 hidden conv layers (used for cDNI too, with label channels).
    return by_arch(arch, {"fcn": 0 if method in CONDITIONED_METHODS else 2, "cnn": 2})


def default_sg_hidden_dim(arch: str) -> int:
    """Units (FCN) or channels (CNN) of an SG model's hidden layers when not configured ([DNI] supplement)."""
    return by_arch(arch, {"fcn": 1024, "cnn": 128})


def default_input_hidden(arch: str) -> tuple[int, int]:
    """(hidden layers, width) of complete unlock's input models when not configured (sgbench's choice)."""
    return by_arch(arch, {"fcn": (1, 1024), "cnn": (1, 128)})
