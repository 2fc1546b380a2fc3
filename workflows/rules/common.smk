# Helpers shared by the rules: the tier's grids (expanded by sgbench.families.grid), the output paths.
# Parsing the workflow imports no torch: only sgbench's registry and the families' config dataclasses.
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from sgbench.families import FAMILIES
from sgbench.families import grid as sggrid

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


def check_report_exists():
    """`snakemake --report` builds the HTML report of one tier (the default one unless --config tier=...).
    Asked for a tier that has not run, say which tiers have a report instead of Snakemake's
    "marked for report but does not exist" (issue #18). Snakemake tells a Snakefile nothing about
    --report, so its flag is read from the command line."""
    if not any(a == "--report" or a.startswith("--report=") for a in sys.argv) or Path(REPORT_MD).exists():
        return
    ran = ([DEFAULT_TIER] if Path("results/REPORT.md").exists() else []) + sorted(
        p.parent.name for p in Path("results/reports").glob("*/REPORT.md"))
    hint = (f"tiers with a report here: {', '.join(ran)}; e.g. snakemake --report report.html --config tier={ran[0]}"
            if ran else f"no tier has run here yet: snakemake --cores all --config tier={TIER} first")
    raise WorkflowError(f"--report: tier {TIER!r} has no report yet ({REPORT_MD} is missing); {hint}")


check_report_exists()
# What a training job asks its executor for beyond threads: the tier's GPUs per run (paper: 1,
# SLURM --gpus=1; smoke and quick are CPU tiers: no gpu resource). Site settings (GPU type,
# partition, account, memory, time) stay in the executor profile (workflows/profiles/slurm).
GPUS_PER_RUN = TIER_CONFIG.get("gpus_per_run", 0)

try:
    RUNS = sggrid.expand(TIER_CONFIG, TIER)  # {family: {run name: config}}
except ValueError as e:
    raise WorkflowError(str(e))


def train_threads(family):
    """A training job's threads. A timing run (parallel family) reserves every core this Snakemake was
    given, so that no other job shares its CPUs (at least its K workers x threads each). On a cluster
    exactly that: the job is submitted with it, and inside the job (where Snakemake runs again, with
    --cores all) it must not grow, or the job's own srun asks for more CPUs than SLURM allocated."""
    if not family.timing:
        return config["train_threads"]

    def threads(wildcards):
        cfg = RUNS[family.name][wildcards.run]
        needed = cfg.workers * cfg.threads
        if workflow.remote_exec or not workflow.local_exec:  # in a cluster job, or submitting one
            return needed
        try:
            return max(needed, workflow.cores)
        except WorkflowError:  # no --cores given
            return needed

    return threads


def train_resources(family):
    """The GPUs a training job asks for: the tier's gpus_per_run, times K for a run on K workers (each
    worker its own GPU). A CPU tier asks for none (no gpu resource at all)."""
    if not GPUS_PER_RUN:
        return {}
    if family.timing:
        return {"gpu": lambda wildcards: GPUS_PER_RUN * RUNS[family.name][wildcards.run].workers}
    return {"gpu": GPUS_PER_RUN}


def data_flags():
    """Where the data is: the config's data_root, else sgbench's own default ($SGBENCH_DATA, ./data)."""
    flags = [f"--data-root {config['data_root']}"] if config.get("data_root") else []
    if config.get("download"):
        flags.append("--download")
    return " ".join(flags)


def metrics_files(family):
    return [f"results/runs/{family.name}/{TIER}/{run}/metrics.json" for run in sorted(RUNS[family.name])]


def table(family, key):
    """Path of one of the tables `sgbench aggregate` writes (names from the family registry)."""
    return f"{TABLES}/{family.outputs[key]}"


def figure_files(family, suffix):
    return [f"{FIGURES}/{name}.{suffix}" for name in family.figures]


def report_caption(name):
    """The HTML report's caption of a table or figure: workflows/report/<name>.rst when written."""
    path = Path(workflow.basedir) / "workflows" / "report" / f"{name}.rst"
    return f"../report/{name}.rst" if path.exists() else None
