"""RNN tables: largest sequence length solved by task, method and truncation T, with where the
boundary gradients ended up (true vs synthetic norm, cosine)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ...analysis.stats import group_stats
from ...analysis.tables import (
    NOT_RUN,
    context_lines,
    curve_rows,
    late_mean,
    pivot_markdown,
    read_metrics,
    run_status,
    refuse_duplicates,
    where,
    write_csv,
    write_text,
)
from ...catalog import RNN_METHODS
from .. import get

RNN_CELL = ["task", "T"]
RUN_COLUMNS = ["task", "method", "T", "seed", "tier", "timesteps", "batch_size", "largest_length_solved",
               "N_solved", "R_solved", "bits_per_sequence", "levels_reached", "late_true_grad_norm",
               "late_sg_norm", "late_cosine", "late_norm_ratio", "timesteps_per_s", "train_time_s",
               "device", "hardware", "threads", "git_commit", "status", "path"]
CURVE_COLUMNS = ["task", "method", "T", "seed", "timestep", "bits_per_output_step", "bits_per_sequence", "length",
                 "boundary_true_grad_norm", "boundary_sg_norm", "boundary_cosine", "elapsed_s"]
RUN_KEYS = CURVE_COLUMNS[:4]
OUTPUTS = get("rnn").outputs  # file names: the registry (sgbench/families/__init__.py)


def run_row(path, m: dict) -> dict:
    """What an RNN run was, the curriculum it reached, and where its boundary gradients ended up
    (late means of the true and synthetic norms and their cosine; NaN for BPTT, which has no SG)."""
    c, f, curves = m["config"], m["final"], m["curves"]
    true_norm = late_mean(curves.get("boundary_true_grad_norm", []))
    sg_norm = late_mean(curves.get("boundary_sg_norm", []))
    return {"task": c["task"], "method": c["method"], "T": c["T"], "seed": c["seed"], "tier": m["tier"],
            "timesteps": c["timesteps"], "batch_size": c.get("batch_size"),
            "largest_length_solved": f["largest_length_solved"], "N_solved": f["N_solved"],
            "R_solved": f.get("R_solved"), "bits_per_sequence": f.get("bits_per_sequence"),
            "levels_reached": len(m["curriculum"]), "late_true_grad_norm": true_norm, "late_sg_norm": sg_norm,
            "late_cosine": late_mean(curves.get("boundary_cosine", [])),
            "late_norm_ratio": sg_norm / true_norm if true_norm > 0 else math.nan,
            "timesteps_per_s": m["timing"]["timesteps_per_s"], "train_time_s": m["timing"]["train_time_s"],
            **where(m["meta"]), "status": run_status(m), "path": str(path)}


def collect(paths, tier: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves): one row per run, and every logged point of every run in long form."""
    runs, curves = [], []
    for path in paths:
        m = read_metrics(path, get("rnn").schema, tier)
        row = run_row(path, m)
        curves += curve_rows(path, m["curves"], CURVE_COLUMNS[4:], {k: row[k] for k in RUN_KEYS})
        runs.append(row)
    runs_df = pd.DataFrame(runs, columns=RUN_COLUMNS)
    refuse_duplicates(runs_df, RUN_KEYS)
    return runs_df, pd.DataFrame(curves, columns=CURVE_COLUMNS)


def rnn_stats(rnn_runs: pd.DataFrame, value: str = "largest_length_solved") -> pd.DataFrame:
    return group_stats(rnn_runs, ["task", "method", "T"], value)


def rnn_markdown(rnn_runs: pd.DataFrame, tier: str) -> str:
    title = "# RNN: largest sequence length solved vs truncation T\n\n"
    if rnn_runs.empty:
        return title + f"Tier **{tier}**: {NOT_RUN}.\n"
    tasks = ", ".join(f"{t} (generated)" for t in sorted(rnn_runs["task"].unique()))
    stats = rnn_stats(rnn_runs)
    return (title + context_lines(rnn_runs, tier, "timesteps", "stream time steps", tasks)
            + "\nLength: copy N vectors, repeat copy N × R; 0 = no curriculum level solved. "
            "T: gradients truncated every T time steps.\n\n"
            + pivot_markdown(stats, ["task", "method"], "T", sorted(stats["T"].unique()), lambda t: f"T = {t}", 1,
                             methods=RNN_METHODS)
            + "\n")


def aggregate(paths, tier: str, out_dir: Path) -> pd.DataFrame:
    """Write every RNN table into out_dir (names in OUTPUTS); returns the runs table."""
    out = {k: Path(out_dir) / v for k, v in OUTPUTS.items()}
    runs, curves = collect(paths, tier)
    runs = runs.sort_values(["task", "T", "method", "seed"], ignore_index=True)
    write_csv(out["runs"], runs)
    write_csv(out["curves"], curves)
    write_csv(out["csv"], rnn_stats(runs))
    write_text(out["md"], rnn_markdown(runs, tier))
    return runs
