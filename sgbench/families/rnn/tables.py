"""RNN tables: largest sequence length solved by task, method and truncation T, with where the
boundary gradients ended up (the SG's training target vs the SG: norms, cosine) and how much signal
the future gradient carries (the signal measurement: sgbench.families.rnn.signal)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ...analysis.stats import group_stats, scored
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
from ...catalog import RNN_METHODS, methods
from .. import get

RNN_CELL = ["task", "T"]
RUN_COLUMNS = ["task", "method", "T", "seed", "tier", "precision", "status", "layout", "schedule", "timesteps",
               "batch_size",
               "hidden_size", "largest_length_solved", "N_solved", "R_solved", "bits_per_sequence", "levels_reached",
               "lag_solved", "late_drop", "late_target_norm", "late_sg_norm", "late_cosine", "late_norm_ratio",
               "late_probe_cosine_exact",
               "late_probe_cosine_discounted", "signal_linear_cosine", "signal_sg_cosine", "timesteps_per_s",
               "train_time_s", "step_s", "activation_memory_mb", "peak_memory_mb", "device", "hardware", "threads",
               "git_commit", "path"]
CURVE_COLUMNS = ["task", "method", "T", "seed", "timestep", "bits_per_output_step", "bits_per_sequence", "length",
                 "boundary_target_norm", "boundary_sg_norm", "boundary_target_cosine", "elapsed_s"]
# The per-run SG signal columns the signal table summarises (issue #14, defect 4).
SIGNAL_COLUMNS = ("late_cosine", "late_probe_cosine_exact", "signal_sg_cosine", "signal_linear_cosine")
# The cost of a window update (A1: truncated BPTT's memory and step time against T; metrics' timing).
COST_COLUMNS = ("step_s", "activation_memory_mb", "peak_memory_mb")
RUN_KEYS = CURVE_COLUMNS[:4]
OUTPUTS = get("rnn").outputs  # file names: the registry (sgbench/families/__init__.py)


def run_row(path, m: dict) -> dict:
    """What an RNN run was, the curriculum it reached, where its boundary gradients ended up (late means
    of the SG's target and SG norms and their cosine; NaN for BPTT, which has no SG) and the signal
    measurement. A diverged run is a result of its method (status column), not a dropped seed."""
    c, f, curves = m["config"], m["final"], m["curves"]
    target_norm = late_mean(curves.get("boundary_target_norm", []))
    sg_norm = late_mean(curves.get("boundary_sg_norm", []))
    nan = lambda v: math.nan if v is None else v
    return {"task": c["task"], "method": c["method"], "T": c["T"], "seed": c["seed"], "tier": m["tier"],
            "status": run_status(m), "layout": c["layout"], "schedule": c["schedule"], "timesteps": c["timesteps"],
            "batch_size": c.get("batch_size"), "hidden_size": c.get("hidden_size"),
            "largest_length_solved": f["largest_length_solved"], "N_solved": f["N_solved"],
            "R_solved": f.get("R_solved"), "bits_per_sequence": f.get("bits_per_sequence"),
            "levels_reached": len(m["curriculum"]), "late_target_norm": target_norm, "late_sg_norm": sg_norm,
            # still improving: the curriculum length gained over the last tenth of the steps (claims' drift)
            "late_drop": late_drop(curves["timestep"], [None if v is None else -v for v in curves["length"]]),
            "lag_solved": lag_solved(c, f),
            "late_cosine": late_mean(curves.get("boundary_target_cosine", [])),
            "late_norm_ratio": sg_norm / target_norm if target_norm > 0 else math.nan,
            "late_probe_cosine_exact": late_mean(curves.get("probe_cosine_exact", [])),
            "late_probe_cosine_discounted": late_mean(curves.get("probe_cosine_discounted", [])),
            "signal_linear_cosine": nan(f.get("signal_linear_cosine")), "signal_sg_cosine": nan(f.get("signal_sg_cosine")),
            "timesteps_per_s": m["timing"]["timesteps_per_s"], "train_time_s": m["timing"]["train_time_s"],
            **{k: nan(m["timing"].get(k)) for k in COST_COLUMNS},  # NaN: a run from before they were measured
            **where(m["meta"]), "path": str(path)}


def lag_solved(config: dict, final: dict) -> float:
    """Copy: the longest dependency (transitions from reading a vector to the step it is due) solved:
    N under the paper layout, N + 1 under the legacy one (sgbench.tasks); 0 if nothing was solved.
    NaN for repeat copy (its lengths count output vectors, not one lag)."""
    if config["task"] != "copy":
        return math.nan
    n = final["N_solved"] or 0
    return n + (1 if config["layout"] == "legacy" and n else 0)


def collect(paths, tier: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves): one row per run, and every logged point of every run in long form."""
    return collect_runs(paths, get("rnn").schema, tier, run_row, RUN_COLUMNS, CURVE_COLUMNS, len(RUN_KEYS))


def rnn_stats(rnn_runs: pd.DataFrame, value: str = "largest_length_solved") -> pd.DataFrame:
    """Seed statistics per (task, method, T); a diverged run at the value's worst (analysis.stats.scored)."""
    return group_stats(scored(rnn_runs, value), ["task", "method", "T"], value)


def rnn_markdown(rnn_runs: pd.DataFrame, tier: str) -> str:
    title = "# RNN: largest sequence length solved vs truncation T\n\n"
    if rnn_runs.empty:
        return title + f"Tier **{tier}**: {NOT_RUN}.\n"
    tasks = ", ".join(f"{t} (generated)" for t in sorted(rnn_runs["task"].unique()))
    stats = rnn_stats(rnn_runs)
    return (title + context_lines(rnn_runs, tier, "timesteps", "stream time steps", tasks)
            + "\n" + setup_text(rnn_runs) + " 0 = no curriculum level solved. "
            "T: gradients truncated every T time steps.\n\n"
            + pivot_markdown(stats, ["task", "method"], "T", sorted(stats["T"].unique()), lambda t: f"T = {t}", 1,
                             methods=RNN_METHODS)
            + "\n" + cost_markdown(rnn_runs))


def cost_markdown(runs: pd.DataFrame) -> str:
    """What a window update costs against T: the memory it holds for its backward pass and its
    seconds (the numbers behind A1, "we truncate because of memory and compute limits")."""
    measured = runs.dropna(subset=["activation_memory_mb"])
    if measured.empty:
        return ""
    parts = ["\n## Cost of one window update vs T\n\n",
             "Activation memory: MiB of the tensors autograd keeps for the update's backward pass (parameters not "
             "counted, the RNN kernel's workspace included; exact and repeatable on one backend: "
             "sgbench.runtime.step_memory). Step: milliseconds per window "
             "update on the run's hardware (training time over windows).\n\n"]
    for column, title, scale, digits in (("activation_memory_mb", "Activation memory (MiB)", 1.0, 2),
                                          ("step_s", "Step (ms)", 1000.0, 1),
                                          ("peak_memory_mb", "CUDA peak memory (MiB)", 1.0, 1)):
        stats = group_stats(measured.assign(**{column: measured[column] * scale}), ["task", "method", "T"],
                            column).dropna(subset=["mean"])
        if not stats.empty:
            parts += [f"### {title}\n\n", pivot_markdown(stats, ["task", "method"], "T", sorted(stats["T"].unique()),
                                                           lambda t: f"T = {t}", digits, methods=RNN_METHODS), "\n\n"]
    return "".join(parts)


def setup_text(runs: pd.DataFrame) -> str:
    """Which task layout and length schedule the numbers use (sgbench.tasks), and any diverged runs."""
    setups = ", ".join(f"{lay} layout with {sch} lengths" for lay, sch in
                       runs[["layout", "schedule"]].drop_duplicates().itertuples(index=False))
    diverged = runs[runs["status"] == "diverged"]
    return (f"Task set-up: {setups} (paper layout: the first output is due on the delimiter step, lag N; "
            "upto: each episode's length drawn from 1..level; see sgbench/tasks.py). Length: copy N vectors, "
            "repeat copy N × R output vectors."
            + (f" Diverged runs (counted as results of their method, at each value's worst): {len(diverged)}." if len(diverged) else ""))


def signal_markdown(runs: pd.DataFrame, tier: str) -> str:
    """Per task, T and method: how the SG relates to its target (late_cosine) and to the exact future
    gradient, and how
    well the best linear SG could do (held out): the direct measure of whether the future gradient is
    negligible or predictable."""
    title = "# RNN: synthetic-gradient signal per run (late means; held-out cosines at the end)\n\n"
    if runs.empty:
        return title + f"Tier **{tier}**: {NOT_RUN}.\n"
    parts = [title, context_lines(runs, tier, "timesteps", "stream time steps",
                                  ", ".join(f"{t} (generated)" for t in sorted(runs["task"].unique()))), "\n\n",
             ("Columns: late cosine of the SG with its training target; with the exact future gradient of the next "
              "probe_horizon windows (probe, runs with probe_every > 0); the run's SG and the best linear SG on "
              "[h; c] (ridge, fitted on other streams) against the exact discounted future gradient, held out.\n\n")]
    for column in SIGNAL_COLUMNS:
        # the best linear SG is measured for every method; the others exist only where an SG does (a
        # diverged BPTT run must not score a worst SG cosine it never had)
        measured = runs if column == "signal_linear_cosine" else runs[runs["method"].isin(methods("rnn", uses_sg=True))]
        stats = rnn_stats(measured, column).dropna(subset=["mean"])
        if stats.empty:
            continue
        parts += [f"## {column}\n\n", pivot_markdown(stats, ["task", "method"], "T", sorted(stats["T"].unique()),
                                                     lambda t: f"T = {t}", 2, methods=RNN_METHODS), "\n\n"]
    return "".join(parts)


def aggregate(paths, tier: str, out_dir: Path) -> pd.DataFrame:
    """Write every RNN table into out_dir (names in OUTPUTS); returns the runs table."""
    out = {k: Path(out_dir) / v for k, v in OUTPUTS.items()}
    runs, curves = collect(paths, tier)
    runs = runs.sort_values(["task", "T", "method", "seed"], ignore_index=True)
    write_csv(out["runs"], runs)
    write_csv(out["curves"], curves)
    write_csv(out["csv"], rnn_stats(runs))
    write_text(out["md"], rnn_markdown(runs, tier))
    write_text(out["signal_md"], signal_markdown(runs, tier))
    return runs
