"""A tier file's grids, expanded into one resolved run config per run name, per family. Torch-free:
the workflow calls it when it builds the DAG, so a bad value is refused before anything runs."""
from __future__ import annotations

import dataclasses
import itertools

from . import FAMILIES, get


def expand(tier_config: dict, tier: str) -> dict[str, dict]:
    """{family: {run name: config}} for every registered family (empty where the tier has no grid)."""
    unknown = sorted(k for k in tier_config if isinstance(tier_config[k], list) and k not in {f.name for f in FAMILIES})
    if unknown:
        raise ValueError(f"tiers/{tier}.yaml: unknown experiment families {unknown}; "
                         f"valid: {', '.join(f.name for f in FAMILIES)}")
    return {f.name: expand_family(f.name, with_chosen_lr(tier_config, f.name, tier), tier) for f in FAMILIES}


def with_chosen_lr(tier_config: dict, family: str, tier: str) -> list[dict]:
    """The family's grids, each given the tier's `lr_selection: chosen:` learning rate unless the grid
    sets its own lr (a tier without lr_selection keeps its grids as they are; one whose selection has not
    run yet is refused, naming the command). Only families declared
    chosen_lr take it (the fair short-budget protocol, docs/statistics.md); the parallel timing runs
    keep the lr their grid sets. A chosen {method: lr} (each method tuned on its own) splits a grid by
    method, each with its own rate."""
    grids = tier_config.get(family, [])
    block = tier_config.get("lr_selection")
    if not get(family).chosen_lr or not block:
        return grids
    chosen = block.get("chosen")
    if chosen is None and any("lr" not in g.get("settings", {}) for g in grids):
        raise ValueError(f"tiers/{tier}.yaml: lr_selection has chosen no learning rate yet (chosen: null), so its "
                         f"{family} grids would run at the default rate: run `sgbench select-lr --tier {tier}` "
                         "first (it writes chosen)")
    out = []
    for g in grids:
        if "lr" in g.get("settings", {}):
            out.append(g)
        elif not isinstance(chosen, dict):
            out.append(g | {"settings": {**g.get("settings", {}), "lr": float(chosen)}})
        else:
            for m in g["method"]:
                if m not in chosen:
                    raise ValueError(f"lr_selection chose no rate for method {m!r} (chosen: {', '.join(chosen)}); "
                                     f"add it to lr_selection's methods and rerun `sgbench select-lr`")
                out.append(g | {"method": [m], "settings": {**g.get("settings", {}), "lr": float(chosen[m])}})
    return out


def expand_family(name: str, grids: list[dict], tier: str) -> dict:
    """{run name: config} for every point of every grid of a family.

    Grids may overlap (the unlock grid repeats Table 1's FCN-3 runs): a run named twice must be the
    same run, else the tier file is ambiguous and refused. Names come from the resolved config, so a
    default given explicitly names the same run as one left out. A grid's axes are its keys other than
    `settings` and the budget (workflows/schemas/tier.schema.yaml says which a family allows; the
    config class refuses any other), each a list of values."""
    family, runs = get(name), {}
    config_class = family.config_class()
    for grid in grids:
        keys = [k for k in grid if k not in ("settings", family.budget)]
        scalar = [k for k in keys if not isinstance(grid[k], list)]
        if scalar:
            raise ValueError(f"tiers/{tier}.yaml, {name} grid: {', '.join(scalar)} must be lists of values "
                             f"(one setting for every run goes under settings:)")
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values))
            settings = dict(grid.get("settings", {}), tier=tier, **{family.budget: grid[family.budget]})
            try:
                cfg = config_class.from_dict(point | settings)
                resolved = cfg.resolved()
            except (TypeError, ValueError) as e:
                raise ValueError(f"tiers/{tier}.yaml, {name} grid {point}: {e}") from e
            run = family.name_run(dataclasses.asdict(resolved))
            if run in runs and runs[run].resolved() != resolved:
                raise ValueError(f"tiers/{tier}.yaml: two {name} grids define run {run} differently")
            runs.setdefault(run, cfg)
    return runs


def run_flags(family_name: str, cfg, device: str) -> str:
    """A run's command-line flags: every set config value but the machine-specific ones, plus the device."""
    skip, flags = get(family_name).non_result, []
    for key, value in dataclasses.asdict(cfg).items():
        if value is None or key in skip:  # set from the workflow's own config
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        flags.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(flags + [f"--device {device}"])
