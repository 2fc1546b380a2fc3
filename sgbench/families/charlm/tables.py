"""Char-LM tables: validation and test bits per character by corpus, method and truncation T."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...analysis.stats import WORST, group_stats, scored
from ...analysis.tables import (
    NOT_RUN,
    collect_runs,
    context_lines,
    late_drop,
    late_mean,
    pivot_markdown,
    run_status,
    where,
    write_csv,
    write_text,
)
from ...catalog import CHARLM_METHODS
from .. import get

RUN_COLUMNS = ["corpus", "method", "T", "seed", "tier", "precision", "status", "timesteps", "batch_size",
               "hidden_size",
               "valid_bpc", "test_bpc", "best_valid_bpc", "late_drop", "late_target_cosine", "timesteps_per_s", "train_time_s",
               "device", "hardware", "threads", "git_commit", "path"]
CURVE_COLUMNS = ["corpus", "method", "T", "seed", "timestep", "train_bpc", "valid_bpc", "boundary_target_cosine",
                 "elapsed_s"]
RUN_KEYS = CURVE_COLUMNS[:4]
OUTPUTS = get("charlm").outputs


def run_row(path, m: dict) -> dict:
    """One run: its corpus (the data set's own name), method, T, and its bits per character. A diverged
    run has no final bpc (NaN) and is counted as a result of its method (status column)."""
    c, f = m["config"], m["final"]
    nan = lambda v: float("nan") if v is None else v
    return {"corpus": m["dataset"]["name"], "method": c["method"], "T": c["T"], "seed": c["seed"],
            "tier": m["tier"], "status": run_status(m), "timesteps": c["timesteps"], "batch_size": c["batch_size"],
            "hidden_size": c["hidden_size"], "valid_bpc": nan(f["valid_bpc"]), "test_bpc": nan(f["test_bpc"]),
            "best_valid_bpc": nan(f["best_valid_bpc"]),
            "late_drop": late_drop(m["curves"]["timestep"], m["curves"]["valid_bpc"]),  # still improving: bpc fell
            "late_target_cosine": late_mean(m["curves"].get("boundary_target_cosine", [])),
            "timesteps_per_s": m["timing"]["timesteps_per_s"], "train_time_s": m["timing"]["train_time_s"],
            **where(m["meta"]), "path": str(path)}


def collect(paths, tier: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves): one row per run, and every logged point of every run in long form."""
    return collect_runs(paths, get("charlm").schema, tier, run_row, RUN_COLUMNS, CURVE_COLUMNS, len(RUN_KEYS))


def bpc_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Seed statistics of validation and test bpc per (corpus, method, T), in long form (a `split` column);
    a diverged run is in its cell at the worst bpc (analysis.stats.METRICS), never dropped."""
    return pd.concat([group_stats(scored(runs, f"{split}_bpc"), ["corpus", "method", "T"], f"{split}_bpc")
                      .assign(split=split)
                      for split in ("valid", "test")], ignore_index=True)


def charlm_markdown(runs: pd.DataFrame, tier: str) -> str:
    title = "# Character-level language modelling: bits per character vs truncation T\n\n"
    if runs.empty:
        return title + f"Tier **{tier}**: {NOT_RUN}.\n"
    corpora = ", ".join(sorted(runs["corpus"].unique()))
    stats = bpc_stats(runs)
    parts = [title, context_lines(runs, tier, "timesteps", "characters per stream", corpora),
             ("\n\nLower is better. Corpora are named as they are (PTB only when it is PTB; "
              "shakespeare-gutenberg is split by work: sgbench/corpus.py)."),
             f" Diverged runs (counted as results of their method at the worst bpc, {WORST['test_bpc']:g}): "
             f"{int((runs['status'] == 'diverged').sum())}."
             if (runs["status"] == "diverged").any() else "", "\n\n"]
    for (corpus, split), part in stats.groupby(["corpus", "split"], sort=False):
        parts += [f"## {corpus}: {split} bpc\n\n",
                  pivot_markdown(part, ["method"], "T", sorted(part["T"].unique()), lambda t: f"T = {t}", 3,
                                 methods=CHARLM_METHODS), "\n\n"]
    return "".join(parts)


def aggregate(paths, tier: str, out_dir: Path) -> pd.DataFrame:
    """Write every char-LM table into out_dir (names in OUTPUTS); returns the runs table."""
    out = {k: Path(out_dir) / v for k, v in OUTPUTS.items()}
    runs, curves = collect(paths, tier)
    runs = runs.sort_values(["corpus", "T", "method", "seed"], ignore_index=True)
    write_csv(out["runs"], runs)
    write_csv(out["curves"], curves)
    write_csv(out["csv"], bpc_stats(runs))
    write_text(out["md"], charlm_markdown(runs, tier))
    return runs
