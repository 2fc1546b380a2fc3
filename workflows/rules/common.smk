# Helpers shared by the rules: the tier's grid, expanded into one entry per run.
import dataclasses
import itertools
from pathlib import Path

import yaml
from snakemake.utils import validate

from sgbench.train_ff import NON_RESULT_FIELDS, FFConfig

# `--config download=true` arrives as the string "true"; read the usual spellings as booleans.
BOOLEAN_WORDS = {"true": True, "yes": True, "false": False, "no": False}
if isinstance(config.get("download"), str):
    config["download"] = BOOLEAN_WORDS.get(config["download"].lower(), config["download"])
validate(config, "../schemas/config.schema.yaml")
TIER = config["tier"]
with open(Path(workflow.basedir) / "workflows" / "config" / "tiers" / f"{TIER}.yaml") as f:
    TIER_CONFIG = yaml.safe_load(f)
validate(TIER_CONFIG, "../schemas/tier.schema.yaml")

GRID_KEYS = ("dataset", "arch", "layers", "method", "seed")


def expand_ff_grid(grids, tier):
    """{run name: FFConfig} for every point of every grid; refuses bad values before anything runs."""
    runs = {}
    for grid in grids:
        for values in itertools.product(*(grid[k] for k in GRID_KEYS)):
            point = dict(zip(GRID_KEYS, values))
            settings = dict(grid.get("settings", {}), iterations=grid["iterations"], tier=tier)
            try:
                cfg = FFConfig.from_dict(point | settings)
                cfg.resolved()
            except ValueError as e:
                raise ValueError(f"tiers/{tier}.yaml, feedforward grid {point}: {e}") from e
            name = "{dataset}-{arch}{layers}-{method}-seed{seed}".format(**point)
            runs[name] = cfg
    return runs


FF_RUNS = expand_ff_grid(TIER_CONFIG["feedforward"], TIER)


def ff_flags(run):
    """The run's train-ff flags, from its resolved grid point plus the workflow settings."""
    cfg = FF_RUNS[run]
    flags = []
    for key, value in dataclasses.asdict(cfg).items():
        if value is None or key in NON_RESULT_FIELDS:  # set below from the workflow's own config
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        flags.append(f"--{key.replace('_', '-')} {value}")
    flags.append(f"--device {config['device']}")
    return " ".join(flags + [data_flags()])


def data_flags():
    """Where the data is: the config's data_root, else sgbench's own default ($SGBENCH_DATA, ./data)."""
    flags = [f"--data-root {config['data_root']}"] if config.get("data_root") else []
    if config.get("download"):
        flags.append("--download")
    return " ".join(flags)
