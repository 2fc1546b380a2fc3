# Helpers shared by the rules: the tier's grids, expanded into one entry per run, and the output paths.
import dataclasses
import itertools
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from sgbench import report as sgreport
from sgbench import diagnostics, parallel, train_ff, train_rnn

# `--config download=true` arrives as the string "true"; read the usual spellings as booleans.
BOOLEAN_WORDS = {"true": True, "yes": True, "false": False, "no": False}
if isinstance(config.get("download"), str):
    config["download"] = BOOLEAN_WORDS.get(config["download"].lower(), config["download"])
validate(config, "../schemas/config.schema.yaml")
TIER = config["tier"]
TIER_FILE = Path(workflow.basedir) / "workflows" / "config" / "tiers" / f"{TIER}.yaml"
with open(TIER_FILE) as f:
    TIER_CONFIG = yaml.safe_load(f)
try:
    validate(TIER_CONFIG, "../schemas/tier.schema.yaml")
except WorkflowError as e:
    raise WorkflowError(f"{TIER_FILE}: not a valid tier file (see workflows/schemas/tier.schema.yaml)", e)

# Where each stage writes, per tier. The default tier's report is the project's front page,
# results/REPORT.md; every other tier's goes to results/reports/<tier>/REPORT.md.
DEFAULT_TIER = "quick"
TABLES = f"results/tables/{TIER}"
FIGURES = f"results/figures/{TIER}"
REPORT_MD = "results/REPORT.md" if TIER == DEFAULT_TIER else f"results/reports/{TIER}/REPORT.md"
# What a training job asks its executor for beyond threads: the tier's GPUs per run (paper: 1,
# SLURM --gpus=1; smoke and quick are CPU tiers: no gpu resource). Site settings (GPU type,
# partition, account, memory, time) stay in the executor profile (workflows/profiles/slurm).
TRAIN_RESOURCES = {"gpu": TIER_CONFIG["gpus_per_run"]} if TIER_CONFIG.get("gpus_per_run") else {}


def ff_run_name(p):
    """mnist-fcn3-dni-seed0; an update probability below 1 is part of the name: mnist-fcn3-dni-p0.2-seed0."""
    prob = "" if p.get("update_prob", 1.0) == 1.0 else f"-p{p['update_prob']:g}"
    return f"{p['dataset']}-{p['arch']}{p['layers']}-{p['method']}{prob}-seed{p['seed']}"


def parallel_run_name(p):
    """mnist-fcn3-cdni-k2-seed0: K workers."""
    return f"{p['dataset']}-{p['arch']}{p['layers']}-{p['method']}-k{p['workers']}-seed{p['seed']}"


def rnn_run_name(p):
    return f"{p['task']}-T{p['T']}-{p['method']}-seed{p['seed']}"


# Each experiment family: its runner's config class, the keys a grid may list, its budget key, run names.
FAMILIES = {
    "feedforward": dict(config=train_ff.FFConfig, non_result=train_ff.NON_RESULT_FIELDS, budget="iterations",
                        keys=("dataset", "arch", "layers", "method", "update_prob", "seed"), name=ff_run_name),
    "rnn": dict(config=train_rnn.RNNConfig, non_result=train_rnn.NON_RESULT_FIELDS, budget="timesteps",
                keys=("task", "method", "T", "seed"), name=rnn_run_name),
    # Issue #8: feed-forward runs that vary DNI placement, warm-up and the SG model (sgbench/diagnostics.py).
    "diagnostics": dict(config=train_ff.FFConfig, non_result=train_ff.NON_RESULT_FIELDS, budget="iterations",
                        keys=("dataset", "arch", "layers", "method", "dni_placement", "warmup", "sg_hidden_layers",
                              "sg_loss_weight", "seed"), name=diagnostics.run_name),
    # Timing runs: threads (per worker) are part of the measurement, so they come from the tier file.
    "parallel": dict(config=parallel.ParallelConfig, non_result={"device", "data_root", "download"},
                     budget="iterations", keys=("dataset", "arch", "layers", "method", "workers", "seed"),
                     name=parallel_run_name),
}


def expand_grids(family, tier):
    """{run name: config} for every point of every grid of a family; refuses bad values before anything runs.

    Grids may overlap (the unlock grid repeats Table 1's FCN-3 runs): a run named twice must be the
    same run, else the tier file is ambiguous and refused. Names come from the resolved config, so a
    default given explicitly names the same run as one left out."""
    spec, runs = FAMILIES[family], {}
    for grid in TIER_CONFIG.get(family, []):
        keys = [k for k in spec["keys"] if k in grid]
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values))
            settings = dict(grid.get("settings", {}), tier=tier, **{spec["budget"]: grid[spec["budget"]]})
            try:
                cfg = spec["config"].from_dict(point | settings)
                resolved = cfg.resolved()
            except ValueError as e:
                raise ValueError(f"tiers/{tier}.yaml, {family} grid {point}: {e}") from e
            name = spec["name"](dataclasses.asdict(resolved))
            if name in runs and runs[name].resolved() != resolved:
                raise ValueError(f"tiers/{tier}.yaml: two {family} grids define run {name} differently")
            runs.setdefault(name, cfg)
    return runs


RUNS = {family: expand_grids(family, TIER) for family in FAMILIES}
FF_RUNS, RNN_RUNS, DIAG_RUNS, PARALLEL_RUNS = (RUNS["feedforward"], RUNS["rnn"], RUNS["diagnostics"],
                                               RUNS["parallel"])


def parallel_threads(wildcards):
    """A timing run's cores: every core Snakemake was given, so that no other job shares its CPUs (at
    least its K workers x threads each). On a cluster exactly that: the job is submitted with it,
    and inside the job (where Snakemake runs again, with --cores all) it must not grow, or the
    job's own srun asks for more CPUs than SLURM allocated and fails."""
    cfg = PARALLEL_RUNS[wildcards.run]
    needed = cfg.workers * cfg.threads
    if workflow.remote_exec or not workflow.local_exec:  # in a cluster job, or submitting one
        return needed
    try:
        return max(needed, workflow.cores)
    except WorkflowError:  # no --cores given
        return needed


def run_flags(family, run):
    """A run's command-line flags: every set config value but the machine-specific ones, plus the device."""
    cfg, skip = RUNS[family][run], FAMILIES[family]["non_result"]
    flags = []
    for key, value in dataclasses.asdict(cfg).items():
        if value is None or key in skip:  # set from the workflow's own config
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        flags.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(flags + [f"--device {config['device']}"])


def data_flags():
    """Where the data is: the config's data_root, else sgbench's own default ($SGBENCH_DATA, ./data)."""
    flags = [f"--data-root {config['data_root']}"] if config.get("data_root") else []
    if config.get("download"):
        flags.append("--download")
    return " ".join(flags)


def metrics_files(family):
    return [f"results/runs/{family}/{TIER}/{run}/metrics.json" for run in sorted(RUNS[family])]


def table(family, key):
    """Path of one of the tables `sgbench aggregate` writes (names from sgbench.report.OUTPUTS)."""
    return f"{TABLES}/{sgreport.OUTPUTS[family][key]}"


def figure_files(family, suffix):
    return [f"{FIGURES}/{name}.{suffix}" for name in sgreport.FIGURES[family]]
