"""Reading metrics.json files into tidy tables, shared by every family's tables module.

A file that is malformed, incomplete, not schema-valid or of another tier is an error naming
that file: a grid with a broken run must not silently report fewer seeds. A family with no runs
at a tier still gets every output, saying "not run at this tier", so the pipeline's outputs are
the same files at every tier.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import runtime
from ..runtime import MetricsError  # noqa: F401  (raised here; defined in the core)
from ..runtime import time_to_target  # noqa: F401  (defined in the core: the parallel workers use it without pandas)
from .stats import CI_TEXT, cell_text, ordered

NOT_RUN = "not run at this tier"
# The last quarter of a run's logged points describes where it ended up (e.g. its boundary gradients).
LATE_FRACTION = 0.25
# A run is still improving when its error fell over the last LATE_STRETCH of its steps (late_drop).
LATE_STRETCH = 0.1


def read_metrics(path: Path, schema: str, tier: str | None = None) -> dict:
    """One run's metrics, checked against sgbench/schemas/<schema>.schema.json (and its tier, when given)."""
    import jsonschema
    try:
        metrics = json.loads(Path(path).read_text())
        runtime.validate(metrics, schema)
    except (OSError, json.JSONDecodeError) as e:
        raise MetricsError(f"{path}: cannot read metrics ({e}); rerun that run") from e
    except jsonschema.ValidationError as e:
        raise MetricsError(f"{path}: not a complete sgbench {schema} file ({e.message}); rerun that run") from e
    if tier is not None and metrics["tier"] != tier:
        raise MetricsError(f"{path}: a run of tier {metrics['tier']!r}, not of tier {tier!r}")
    return metrics


def run_status(m: dict) -> str:
    """A run's outcome: completed, or diverged (stopped at its first non-finite loss). "complete",
    the older spelling, reads as completed."""
    return "completed" if m["status"] == "complete" else m["status"]


def diverged_text(runs: pd.DataFrame) -> str:
    """The sentence a table adds when some of its runs diverged: which, and how they are counted."""
    if "status" not in runs or not (runs["status"] == "diverged").any():
        return ""
    names = ", ".join(sorted(Path(p).parent.name for p in runs.loc[runs["status"] == "diverged", "path"]))
    return (f"\n\nDiverged (stopped at the first non-finite loss; each counts as a result of its method, with "
            f"the value it ended at): {names}.")


def where(meta: dict) -> dict:
    hw = meta["hardware"]
    return {"device": meta["device"], "hardware": hw.get("gpu") or hw["cpu"], "threads": hw["torch_threads"],
            "git_commit": meta["git_commit"]}


def curve_rows(path, curves: dict, names: list[str], keys: dict) -> list[dict]:
    """Long-form rows of equal-length curves; a ragged file is an error naming it."""
    present = [n for n in names if n in curves]
    lengths = {n: len(curves[n]) for n in present}
    if len(set(lengths.values())) > 1:
        raise MetricsError(f"{path}: curves of unequal length {lengths}; rerun that run")
    return [keys | {n: curves[n][i] for n in present} for i in range(len(curves[present[0]]))]


def collect_runs(paths, schema: str, tier: str | None, run_row, run_columns: list[str],
                 curve_columns: list[str], n_keys: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A family's (runs, curves): one row per run (`run_row(path, metrics)`), and every logged point of
    every run in long form. The first `n_keys` curve columns name a run; the rest are its curves. The
    same run twice is an error."""
    keys = curve_columns[:n_keys]
    runs, curves, settings = [], [], {key: [] for key in RUN_WIDE}
    for path in paths:
        m = read_metrics(path, schema, tier)
        row = run_row(path, m)
        curves += curve_rows(path, m["curves"], curve_columns[n_keys:], {k: row[k] for k in keys})
        runs.append(row)
        for key, default in RUN_WIDE.items():  # absent: a run from before the setting, at its default
            settings[key].append(m["config"].get(key, default))
    for key, values in settings.items():
        refuse_mixed(key, paths, values)
    runs_df = pd.DataFrame(runs, columns=run_columns)
    for key, values in settings.items():
        if key in run_columns:  # precision: every family's RUN_COLUMNS; adam: the feed-forward ones
            runs_df[key] = pd.Series(values, dtype=object)
    refuse_duplicates(runs_df, keys)
    return runs_df, pd.DataFrame(curves, columns=curve_columns)


# Settings a table holds one value of (issue #26), with the value of a run that does not record them
# (it ran before the setting existed, or its family has none: an RNN's Adam is always for-loop).
RUN_WIDE = {"precision": "fp32", "adam": "for-loop"}


def refuse_mixed(key: str, paths, values: list[str]) -> None:
    """One precision, one Adam per table (issue #26): a cell's seeds pooled over fp32 and bf16 runs (or
    for-loop and fused Adam) would be neither's number, and their difference is what the parity studies
    measure (results/reference/precision-parity, adam-parity), not noise. Refusing is the simple honest
    choice; the runs table records each run's value and the context line names it."""
    if len(set(values)) > 1:
        counts = ", ".join(f"{v}: {values.count(v)}" for v in sorted(set(values)))
        example = {v: str(path) for path, v in zip(paths, values)}
        kind = "precisions" if key == "precision" else f"{key} settings"
        raise MetricsError(f"runs of several {kind} in one table ({counts}; e.g. "
                           + ", ".join(f"{v} {example[v]}" for v in sorted(example))
                           + f"): their cells would pool them; aggregate each {key}'s runs on their own "
                           f"(a tier's runs share one {key})")


def refuse_duplicates(runs: pd.DataFrame, keys: list[str]) -> None:
    """Two files of the same run (same cell, method, seed) would count one seed twice."""
    twice = runs[runs.duplicated(keys, keep=False)]
    if not twice.empty:
        raise MetricsError("the same run twice: " + ", ".join(twice["path"]) + "; keep one of each")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV written by `aggregate` (an empty family has just the header)."""
    return pd.read_csv(path)


def mean_or_none(values):
    """Mean of a per-layer list (older runs have none: None)."""
    return None if values is None else float(np.mean(values))


def late_mean(values: list) -> float:
    """Mean of the non-null values in the last LATE_FRACTION of a curve (NaN if none)."""
    tail = values[len(values) - max(1, math.ceil(LATE_FRACTION * len(values))):] if values else []
    tail = [v for v in tail if v is not None]
    return float(np.mean(tail)) if tail else math.nan


def late_drop(steps: list, errors: list) -> float:
    """How much a run's error fell over the last LATE_STRETCH of its steps: the error at the last
    logged step at or before (1 - LATE_STRETCH) of the final step, minus the final error. NaN when
    fewer than two points were logged or one of the two is missing (a diverged run's)."""
    points = [(s, e) for s, e in zip(steps, errors) if s is not None]
    if len(points) < 2:
        return math.nan
    final_step, final = points[-1]
    before = [e for s, e in points[:-1] if s <= (1 - LATE_STRETCH) * final_step]
    if not before or before[-1] is None or final is None:
        return math.nan
    return float(before[-1]) - float(final)



def pivot_markdown(stats: pd.DataFrame, rows: list[str], column: str, order, label, digits: int = 2,
                   methods=()) -> str:
    """Rows `rows` (methods in `methods` order), one column per value of `column` (in `order`),
    cells 'mean ± ci (n)'."""
    stats = stats.assign(cell=[cell_text(s, digits) for _, s in stats.iterrows()])
    table = stats.pivot(index=rows, columns=column, values="cell").fillna("—")
    table = table[ordered(table.columns, order)].reset_index()
    if "method" in rows:
        rank = {m: i for i, m in enumerate(ordered(table["method"], methods))}
        table = table.sort_values(rows, key=lambda col: col.map(rank) if col.name == "method" else col)
    table.columns = [label(c) if c not in rows else c for c in table.columns]
    return table.to_markdown(index=False)


def net_label(row) -> str:
    """A feed-forward net as tables, figures and the report name it: 'mnist FCN-3'."""
    return f"{row['dataset']} {row['arch'].upper()}-{int(row['layers'])}"


def budget_text(runs: pd.DataFrame, budget: str, unit: str) -> str:
    return ", ".join(f"{int(b):,} {unit}" for b in sorted(runs[budget].unique()))


def context_lines(runs: pd.DataFrame, tier: str, budget: str, unit: str, datasets: str) -> str:
    """Where the numbers come from: tier, budget, data variant, seeds, hardware."""
    seeds = ", ".join(str(s) for s in sorted(runs["seed"].unique()))
    where = "; ".join(f"{d} ({h}, {t} thread{'s' if t != 1 else ''})"
                      for d, h, t in runs[["device", "hardware", "threads"]].drop_duplicates().itertuples(index=False))
    # precision and Adam are named when not the default (collect_runs refuses a mix), so tables read as before
    named = {key: ", ".join(v for v in runs.get(key, pd.Series(dtype=object)).dropna().unique() if v != default)
             for key, default in RUN_WIDE.items()}
    return (f"Tier: **{tier}**. Budget: {budget_text(runs, budget, unit)}. Data: {datasets}. "
            + (f"Precision: {named['precision']}. " if named["precision"] else "")
            + (f"Adam: {named['adam']}. " if named["adam"] else "")
            + f"Seeds: {seeds}. Hardware: {where}.\n\nCells: {CI_TEXT}." + diverged_text(runs))


def write_csv(path: Path, df: pd.DataFrame) -> None:
    runtime.atomic_write_bytes(path, df.to_csv(index=False).encode())


def write_text(path: Path, text: str) -> None:
    runtime.atomic_write_bytes(path, text.encode())
