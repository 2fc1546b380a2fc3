"""The experiment families, as data: one `Family` per folder under sgbench/families/.

A family is a plugin: its folder holds its run config (config.py), its runner (run.py), its tables
(tables.py) and its figures (figures.py). This registry says where each piece is and what the
family writes; the command line, the workflow and the report iterate it. Nothing here imports a
runner (or torch): `Family.runner()` imports it when a run starts. An unknown family name is an
error (`get`), never a fallback to another family's code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field


def _load(spec: str):
    """'package.module:attribute' -> the attribute, imported now."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Family:
    name: str
    summary: str                  # one line, for --help and the report
    command: str                  # `sgbench <command>` trains one run of it
    config: str                   # "module:Class": its run-config dataclass (torch-free module)
    runner: str                   # "module:function(config, out_dir) -> metrics": imported lazily
    run_name: str                 # "module:function(grid point) -> run folder name" (torch-free)
    schema: str                   # sgbench/schemas/<schema>.schema.json checks its metrics.json
    grid_keys: tuple[str, ...]    # keys a tier's grid may list for it
    budget: str                   # the config field that sets its budget
    budget_unit: str              # how tables name that budget's unit
    outputs: dict[str, str]       # what `sgbench aggregate <name>` writes: key -> file name
    figures: tuple[str, ...]      # what `sgbench figures <name>` draws: NAME.png and NAME.pdf each
    report_tables: tuple[tuple[str, str], ...] = ()  # (outputs key, title) that REPORT.md links
    needs_data: bool = True       # its runs read an image data set (the pipeline prepares it first)
    timing: bool = False          # its runs are timings: each takes the whole machine
    non_result: frozenset[str] = field(default_factory=frozenset)  # config fields that set no number

    @property
    def module(self) -> str:
        return f"{__name__}.{self.name}"

    def config_class(self):
        return _load(self.config)

    def train(self, config, out_dir):
        """Run one training run of this family (imports the runner, and torch, now)."""
        return _load(self.runner)(config, out_dir)

    def name_run(self, point: dict) -> str:
        return _load(self.run_name)(point)

    def tables(self):
        """Its tables module: collect(...), aggregate(paths, tier, out_dir), its Markdown helpers."""
        return importlib.import_module(f"{self.module}.tables")

    def plots(self):
        """Its figures module: draw(tier, tables, out_dir) (imports matplotlib)."""
        return importlib.import_module(f"{self.module}.figures")


_FF = "sgbench.families.feedforward"
_FF_NON_RESULT = frozenset({"device", "data_root", "download", "threads"})

FAMILIES: tuple[Family, ...] = (
    Family("feedforward", "MNIST / CIFAR-10 FCN and CNN: backprop, DNI, cDNI, no-bprop, complete unlock, "
           "random layer updates ([DNI] Table 1, Sec. 3.3-3.4)",
           "train-ff", f"{_FF}.config:FFConfig", f"{_FF}.seeds:train", f"{_FF}.config:run_name", "ff_metrics",
           ("dataset", "arch", "layers", "method", "update_prob", "seed"), "iterations", "iterations",
           {"runs": "feedforward_runs.csv", "curves": "feedforward_curves.csv", "table1_md": "feedforward.md",
            "table1_csv": "feedforward.csv", "unlock_md": "unlock.md", "unlock_csv": "unlock.csv"},
           ("ff_test_error", "unlock_test_error"),
           (("table1_md", "Table 1 layout"), ("unlock_md", "complete unlock / update probability")),
           non_result=_FF_NON_RESULT),
    Family("rnn", "copy / repeat copy with truncated BPTT, DNI, DNI + Aux, BP(λ) ([DNI] Sec. 3.1)",
           "train-rnn", "sgbench.families.rnn.config:RNNConfig", "sgbench.families.rnn.run:train_rnn",
           "sgbench.families.rnn.config:run_name", "rnn_metrics", ("task", "method", "T", "seed"), "timesteps",
           "stream time steps",
           {"runs": "rnn_runs.csv", "curves": "rnn_curves.csv", "md": "rnn.md", "csv": "rnn.csv",
            "signal_md": "rnn_signal.md"},
           ("rnn_length_vs_T", "rnn_boundary_gradients", "rnn_curriculum"),
           (("md", "RNN largest length solved"), ("signal_md", "RNN synthetic-gradient signal")), needs_data=False,
           non_result=frozenset({"device", "threads", "checkpoint_every_s"})),
    Family("charlm", "character-level language modelling (bits per character) with truncated BPTT, DNI, "
           "DNI + Aux, BP(λ) ([DNI] Sec. 3.1's third task; on the corpus it names)",
           "train-charlm", "sgbench.families.charlm.config:CharLMConfig", "sgbench.families.charlm.run:train_charlm",
           "sgbench.families.charlm.config:run_name", "charlm_metrics", ("corpus", "method", "T", "seed"),
           "timesteps", "characters per stream",
           {"runs": "charlm_runs.csv", "curves": "charlm_curves.csv", "md": "charlm.md", "csv": "charlm.csv"},
           ("charlm_bpc_vs_steps",), (("md", "char-LM bits per character"),), needs_data=False,
           non_result=frozenset({"device", "threads", "data_root", "download"})),
    # Feed-forward runs that vary DNI placement, warm-up and the SG model: the feed-forward runner.
    Family("diagnostics", "why DNI works or fails: SG fidelity, DNI placement, warm-up, SG model",
           "train-ff", f"{_FF}.config:FFConfig", f"{_FF}.seeds:train",
           "sgbench.families.diagnostics.config:run_name", "ff_metrics",
           ("dataset", "arch", "layers", "method", "dni_placement", "warmup", "sg_hidden_layers", "sg_loss_weight",
            "seed"), "iterations", "iterations",
           {"runs": "diagnostics_runs.csv", "curves": "diagnostics_curves.csv",
            "fidelity": "diagnostics_fidelity.csv", "md": "diagnostics.md"},
           ("diag_fidelity", "diag_placement", "diag_warmup", "diag_sg_cost"),
           (("md", "diagnostics: placement, fidelity, warm-up, SG model"),), non_result=_FF_NON_RESULT),
    # Timing runs: threads (per worker) are part of the measurement, so they come from the tier file.
    Family("parallel", "a feed-forward net on K worker processes: single-process and locked backprop, "
           "GPipe / 1F1B pipelines, data parallelism (DDP) and update-unlocked DNI / cDNI stages "
           "(throughput, seconds to target errors, final error, the analytic model to K = 16)",
           "train-parallel", "sgbench.families.parallel.config:ParallelConfig",
           "sgbench.families.parallel.run:train_parallel", "sgbench.families.parallel.config:run_name",
           "parallel_metrics", ("dataset", "arch", "layers", "method", "late_sg", "workers", "seed"), "iterations",
           "iterations",
           {"runs": "parallel_runs.csv", "curves": "parallel_curves.csv", "md": "parallel.md",
            "csv": "parallel.csv", "targets": "parallel_targets.csv", "targets_csv": "parallel_target_stats.csv",
            "model": "parallel_model.csv"},
           ("parallel_error_vs_time", "parallel_speed"),
           (("md", "parallel workers: throughput, time to target, analytic model"),), timing=True,
           non_result=frozenset({"device", "data_root", "download", "save_params"})),
)


def names() -> tuple[str, ...]:
    return tuple(f.name for f in FAMILIES)


def get(name: str) -> Family:
    """The family called `name`; an unknown name is an error that lists the known ones."""
    for f in FAMILIES:
        if f.name == name:
            return f
    raise ValueError(f"unknown experiment family {name!r}; choose one of {', '.join(names())}")


def commands() -> dict[str, Family]:
    """`sgbench <command>` -> the family whose runs it trains (the first that names it)."""
    out: dict[str, Family] = {}
    for f in FAMILIES:
        out.setdefault(f.command, f)
    return out


def aggregate(name: str, paths, tier: str, out_dir):
    """`sgbench aggregate`: a family's metrics.json files -> its tables in out_dir; returns the runs table."""
    return get(name).tables().aggregate(paths, tier, out_dir)


def draw(name: str, tier: str, tables, out_dir):
    """`sgbench figures`: a family's figures from the tables `aggregate` wrote; returns the PNG paths."""
    return get(name).plots().draw(tier, tables, out_dir)
