"""Feed-forward tables: [DNI] Table 1 (final test error by data set, net and method) and the
complete-unlock / update-probability table, each as Markdown (to read) and CSV (to reuse)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...analysis.stats import group_stats
from ...analysis.tables import (
    NOT_RUN,
    collect_runs,
    context_lines,
    late_drop,
    mean_or_none,
    pivot_markdown,
    read_table,
    run_status,
    where,
    write_csv,
    write_text,
)
from ...catalog import TABLE1_METHODS, UNLOCK_METHODS
from .. import get
from . import time_to_result

FF_CELL = ["dataset", "arch", "layers"]
RUN_COLUMNS = ["dataset", "arch", "layers", "method", "update_prob", "seed", "tier", "precision", "adam", "iterations",
               "batch_size", "lr", "status", "test_error", "val_error", "late_drop", "update_fraction", "steps_per_s",
               "train_time_s",
               "device", "hardware", "threads", "git_commit", "path"]
CURVE_COLUMNS = ["dataset", "arch", "layers", "method", "update_prob", "seed", "step", "test_error", "train_loss",
                 "val_error", "elapsed_s"]  # validation error and seconds: the time-to-result targets
RUN_KEYS = CURVE_COLUMNS[:6]
OUTPUTS = get("feedforward").outputs  # file names: the registry (sgbench/families/__init__.py)


def run_row(path, m: dict) -> dict:
    """What a feed-forward run was (data variant actually read, update_prob 1 when older runs lack it),
    what it measured, and where it ran."""
    c = m["config"]
    return {"dataset": m["dataset"]["variant"], "arch": c["arch"], "layers": c["layers"], "method": c["method"],
            "update_prob": float(c.get("update_prob", 1.0)), "seed": c["seed"], "tier": m["tier"],
            "iterations": c["iterations"], "batch_size": c["batch_size"], "lr": c["lr"],
            "status": run_status(m), "test_error": m["final"]["test_error"], "val_error": m["final"].get("val_error"),
            "late_drop": run_late_drop(m["curves"]), "update_fraction": mean_or_none(m["final"].get("update_fraction")),
            "steps_per_s": m["timing"]["steps_per_s"], "train_time_s": m["timing"]["train_time_s"],
            **where(m["meta"]), "path": str(path)}


def run_late_drop(curves: dict) -> float:
    """How much the run was still improving at its end (analysis.tables.late_drop), on the validation
    error where the run logged it, else on the test error."""
    errors = curves.get("val_error") or curves.get("test_error", [])
    return late_drop(curves.get("step", []), errors)


def collect(paths, tier: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves): one row per run, and every logged point of every run in long form."""
    return collect_runs(paths, get("feedforward").schema, tier, run_row, RUN_COLUMNS, CURVE_COLUMNS, len(RUN_KEYS))


def table1_stats(ff_runs: pd.DataFrame) -> pd.DataFrame:
    """Stats of final test error over the seeds of each Table 1 cell and method."""
    return group_stats(table1_runs(ff_runs), FF_CELL + ["method"], "test_error")


def unlock_cells(ff_runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of every (dataset, arch, layers) where an unlock method or an update probability < 1 ran."""
    marked = ff_runs["method"].isin(UNLOCK_METHODS) | (ff_runs["update_prob"] < 1.0)
    cells = ff_runs.loc[marked, FF_CELL].drop_duplicates()
    return ff_runs.merge(cells, on=FF_CELL)


def unlock_stats(ff_runs: pd.DataFrame) -> pd.DataFrame:
    return group_stats(unlock_cells(ff_runs), FF_CELL + ["method", "update_prob"], "test_error")


def table1_runs(ff_runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of [DNI] Table 1: its four methods, every layer updated at each step."""
    return ff_runs[(ff_runs["update_prob"] == 1.0) & ff_runs["method"].isin(TABLE1_METHODS)]


def table1_markdown(ff_runs: pd.DataFrame, tier: str) -> str:
    title = "# Feed-forward: final test error (%), [DNI] Table 1 layout\n\n"
    runs = table1_runs(ff_runs)
    if runs.empty:
        return title + f"Tier **{tier}**: {NOT_RUN}.\n"
    return (title + context_lines(runs, tier, "iterations", "iterations", ", ".join(sorted(runs["dataset"].unique())))
            + "\nRows: data set (variant actually read), net, hidden layers. [DNI]'s own numbers are after 500k "
            "iterations; a shorter budget is not that replication.\n\n"
            + pivot_markdown(table1_stats(ff_runs), FF_CELL, "method", TABLE1_METHODS, str) + "\n")


def unlock_markdown(ff_runs: pd.DataFrame, tier: str) -> str:
    title = "# Complete unlock and update probability: final test error (%)\n\n"
    runs = unlock_cells(ff_runs)
    if runs.empty:
        return title + f"Tier **{tier}**: {NOT_RUN}.\n"
    stats = unlock_stats(ff_runs)
    probs = sorted(stats["update_prob"].unique(), reverse=True)
    return (title + context_lines(runs, tier, "iterations", "iterations", ", ".join(sorted(runs["dataset"].unique())))
            + "\nColumns: p = probability that a layer is updated at a step (1 = every step).\n\n"
            + pivot_markdown(stats, FF_CELL + ["method"], "update_prob", probs, lambda p: f"p = {p:g}",
                             methods=TABLE1_METHODS + UNLOCK_METHODS) + "\n")


def aggregate(paths, tier: str, out_dir: Path) -> pd.DataFrame:
    """Write every feed-forward table into out_dir (names in OUTPUTS); returns the runs table."""
    out = {k: Path(out_dir) / v for k, v in OUTPUTS.items()}
    runs, curves = collect(paths, tier)
    runs = runs.sort_values(FF_CELL + ["method", "update_prob", "seed"], ignore_index=True)
    write_csv(out["runs"], runs)
    write_csv(out["curves"], curves)
    write_csv(out["table1_csv"], table1_stats(runs))
    write_text(out["table1_md"], table1_markdown(runs, tier))
    write_csv(out["unlock_csv"], unlock_stats(runs))
    write_text(out["unlock_md"], unlock_markdown(runs, tier))
    return runs


def report_section(tier: str, tables: Path) -> list[str]:
    """REPORT.md's feed-forward section: time to result (feedforward/time_to_result.py)."""
    paths = {k: Path(tables) / OUTPUTS[k] for k in ("runs", "curves")}
    runs = read_table(paths["runs"]) if paths["runs"].exists() else pd.DataFrame()
    if runs.empty:
        return ["## Time to result (feed-forward)\n", f"Tier **{tier}**: {NOT_RUN}.\n"]
    return time_to_result.section(runs, read_table(paths["curves"]))
