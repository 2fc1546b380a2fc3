"""The fair short-budget protocol, torch-free parts: choose a tier's learning rate from validation
error (never the test error), record the choice in the tier file, and say in the report which
protocol a tier used. `sgbench select-lr` (sgbench/families/feedforward/select_lr.py) trains the
selection runs. docs/statistics.md describes the protocol.

Two rulesets. With `methods:` in the tier's `lr_selection:` block (issue #23 item 4, MLCommons
AlgoPerf's external tuning): every listed method gets the same trials -- each rate of the same
pre-declared grid, on the same nets, seeds and budget, and nothing else tuned -- and takes the rate
with its own lowest mean validation error; `chosen` is then {method: lr}. Without it (the older
ruleset): backprop alone is tuned and its rate applies to every method."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import yaml

# The tier files of this checkout (the workflow reads the same ones).
TIERS_DIR = Path(__file__).resolve().parents[2] / "workflows" / "config" / "tiers"
SELECTION_DIR = "results/reference/lr-selection"

SELECTION_COLUMNS = ["dataset", "arch", "layers", "method", "lr", "seed", "iterations", "status", "val_error",
                     "test_error"]


def choose_lr(runs: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """The grid's learning rate with the lowest mean final validation error over every selection run
    (nets x seeds), and the per-lr summary. Test error is carried for the record, never read here.
    A diverged run scores 100 % (it counts against its lr); ties go to the smaller lr."""
    if runs.empty:
        raise ValueError("no selection runs to choose a learning rate from")
    val = runs["val_error"].astype(float).where(runs["status"] != "diverged", 100.0)
    if val.isna().any():
        raise ValueError("a selection run without a validation error: rerun it with the validation split on")
    by_lr = (runs.assign(score=val).groupby("lr", sort=True)
             .agg(runs=("score", "size"), mean_val_error=("score", "mean"),
                  diverged=("status", lambda s: int((s == "diverged").sum())))
             .reset_index())
    best = by_lr.sort_values(["mean_val_error", "lr"], kind="stable").iloc[0]
    return float(best["lr"]), by_lr


def choose_per_method(runs: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """{method: its lr} by choose_lr on each method's own runs, and the per-(method, lr) summary."""
    chosen, tables = {}, []
    for method, g in runs.groupby("method", sort=False):
        chosen[method], by_lr = choose_lr(g)
        tables.append(by_lr.assign(method=method))
    return chosen, pd.concat(tables, ignore_index=True)[["method", "lr", "runs", "mean_val_error", "diverged"]]


def selection_methods(block: dict) -> list[str]:
    """The methods a selection tunes: `methods:` (each on its own), else backprop for every method."""
    return list(block.get("methods") or ["backprop"])


def at_edge(chosen, grid) -> list[str]:
    """The choices at the grid's smallest or largest rate ("dni 3e-05 (the grid's smallest)"): the best
    rate may lie beyond the grid, so the method may be under-tuned there."""
    lo, hi = min(grid), max(grid)
    items = chosen.items() if isinstance(chosen, dict) else [("every method", chosen)]
    return [f"{m} {float(v):g} (the grid's {'smallest' if float(v) == lo else 'largest'})"
            for m, v in items if float(v) in (lo, hi)]


def edge_text(chosen, grid) -> str:
    edges = at_edge(chosen, grid)
    return (f" At the grid's edge: {', '.join(edges)}; a rate beyond the grid might do better, so a verdict on "
            "that method is at most as good as the grid." if edges else "")


def chosen_text(chosen) -> str:
    return (", ".join(f"{m} {v:g}" for m, v in chosen.items()) if isinstance(chosen, dict)
            else f"{float(chosen):g}")


def yaml_number(v: float) -> str:
    """v as YAML reads back a float: 3e-05 would be a string to a YAML 1.1 reader, 3.0e-05 is not."""
    text = f"{v:g}"
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


CHOSEN_LINE = re.compile(r"^(\s+chosen:)\s*[^#\n]*?(\s*#.*)?$", re.MULTILINE)


def write_chosen(tier_text: str, lr) -> str:
    """The tier file's text with `lr_selection: chosen:` set to lr, a number or {method: lr} (comments
    and layout kept)."""
    block = re.search(r"^lr_selection:\n((?:[ \t]+.*\n|\s*\n)*)", tier_text, re.MULTILINE)
    if block is None:
        raise ValueError("the tier file has no lr_selection: block to record the choice in")
    body = block.group(1)
    if not CHOSEN_LINE.search(body):
        raise ValueError("the tier file's lr_selection: block has no `chosen:` line (add `  chosen: null`)")
    value = ("{" + ", ".join(f"{m}: {yaml_number(v)}" for m, v in lr.items()) + "}") if isinstance(lr, dict) \
        else yaml_number(lr)
    new_body = CHOSEN_LINE.sub(lambda mt: f"{mt.group(1)} {value}{mt.group(2) or ''}", body, count=1)
    return tier_text[:block.start(1)] + new_body + tier_text[block.end(1):]


def selection_markdown(tier: str, block: dict, runs: pd.DataFrame, by_lr: pd.DataFrame, lr) -> str:
    """The record of one selection: the protocol, every run, the choice (a number, or {method: lr})."""
    nets = ", ".join(f"{block['dataset']} {block['arch'].upper()}-{n}" for n in block["layers"])
    methods = selection_methods(block)
    per_method = isinstance(lr, dict)
    pick = (lambda r: lr.get(r["method"]) == r["lr"]) if per_method else (lambda r: r["lr"] == lr)
    table = by_lr.assign(chosen=["**chosen**" if pick(r) else "" for _, r in by_lr.iterrows()])
    who = (f"each of {', '.join(methods)} on its own (the same trials for every method: AlgoPerf's external "
           "tuning)" if per_method else "backprop")
    return (f"# Learning rate for tier `{tier}`\n\n"
            f"Protocol (docs/statistics.md): {who} on {nets}, seeds {', '.join(map(str, block['seed']))}, "
            f"{int(block['iterations']):,} iterations (the tier's budget), one run per learning rate of the grid "
            f"{', '.join(f'{v:g}' for v in block['grid'])}; the lowest mean final **validation** error picks "
            f"the rate (a diverged run scores 100 %). Test error is recorded, never read by the choice.\n\n"
            f"Chosen: **lr = {chosen_text(lr)}**, used by "
            f"{'each method' if per_method else 'every method'} in every feed-forward and diagnostics run of the "
            "tier." + edge_text(lr, block["grid"]) + "\n\n" + table.to_markdown(index=False, floatfmt="g")
            + "\n\n## Runs\n\n"
            + runs.to_markdown(index=False, floatfmt="g") + "\n")


def tier_config(tier: str, tiers_dir: Path = TIERS_DIR) -> dict | None:
    """The tier file's contents (None when this checkout has no such tier file)."""
    path = Path(tiers_dir) / f"{tier}.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def backprop_alone(tier: str, tiers_dir: Path = TIERS_DIR) -> float | None:
    """The rate when the tier's feed-forward runs used the older ruleset (backprop alone tuned, its rate
    applied to every method), else None (the same budget per method, [DNI]'s settings, or none chosen)."""
    chosen = ((tier_config(tier, tiers_dir) or {}).get("lr_selection") or {}).get("chosen")
    return None if chosen is None or isinstance(chosen, dict) else float(chosen)


def protocol_text(tier: str, ff_runs: pd.DataFrame, tiers_dir: Path = TIERS_DIR) -> str:
    """Which learning-rate protocol a tier used, for the report."""
    block = (tier_config(tier, tiers_dir) or {}).get("lr_selection")
    used = sorted(ff_runs["lr"].dropna().unique()) if "lr" in ff_runs and not ff_runs.empty else []
    used_text = ", ".join(f"{v:g}" for v in used) or "none (no feed-forward runs)"
    if not block and not used:  # e.g. the rnn tier: no learning rate here was tuned or taken from [DNI]
        return (f"tier `{tier}` has no feed-forward runs, so no learning rate was tuned; its runs keep their "
                "family's settings, the same for every method.")
    if not block:
        return (f"tuning ruleset **[DNI]'s settings** (nothing tuned): tier `{tier}` keeps [DNI]'s settings (Adam, "
                f"the paper's learning rate, /10 at 60 % and 80 % of "
                f"the run); its feed-forward runs used lr {used_text}.")
    grid = ", ".join(f"{v:g}" for v in block["grid"])
    if block.get("chosen") is None:
        return (f"tier `{tier}` declares the fair short-budget protocol (grid {grid}) but no rate was chosen yet: "
                f"run `sgbench select-lr --tier {tier}`. Its feed-forward runs used lr {used_text}.")
    if isinstance(block["chosen"], dict):
        trials = len(block["grid"]) * len(block["layers"]) * len(block["seed"])
        return (f"tuning ruleset **the same budget per method**: tier `{tier}` gives every method the same tuning "
                f"budget (AlgoPerf's external tuning): each of "
                f"{', '.join(block['chosen'])} got the same {trials} trials -- every rate of the pre-declared grid "
                f"{grid} on the same nets and seeds at this tier's budget, nothing else tuned -- and uses the rate "
                f"with its own lowest mean validation error: lr **{chosen_text(block['chosen'])}** "
                f"({SELECTION_DIR}/{tier}/; docs/statistics.md)." + edge_text(block["chosen"], block["grid"]))
    chosen = float(block["chosen"])
    text = (f"tuning ruleset **backprop-only choice** (the older one): tier `{tier}` uses the fair short-budget "
            f"protocol: lr **{chosen:g}**, chosen from {grid} on "
            f"backprop's validation error at this tier's budget ({SELECTION_DIR}/{tier}/; docs/statistics.md), "
            "for every method (backprop alone tuned: a rate that suits backprop can stall an SG method).")
    stray = [v for v in used if abs(v - chosen) > 1e-12 * chosen]
    if stray:
        text += f" Some feed-forward runs used another lr ({', '.join(f'{v:g}' for v in stray)}): their grid sets it."
    return text
