"""Collect metrics.json files into tidy tables: [DNI] Table 1, the unlock / update-probability
table and the RNN table of largest length solved, each as Markdown (to read) and CSV (to reuse).

A file that is malformed, incomplete, not schema-valid or of another tier is an error naming
that file: a grid with a broken run must not silently report fewer seeds. A family with no runs
at a tier still gets every output, saying "not run at this tier", so the pipeline's outputs are
the same files at every tier.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from . import runio

NOT_RUN = "not run at this tier"
CI_LEVEL = 0.95
CI_TEXT = ("mean ± half-width of the 95 % confidence interval of the mean over seeds (Student t with n − 1 "
           "degrees of freedom: few seeds make the normal interval too narrow); n = runs (seeds); "
           "n = 1: one run, no interval")

TABLE1_METHODS = ("backprop", "dni", "cdni", "no_bprop")
UNLOCK_METHODS = ("unlock", "cunlock")
RNN_METHODS = ("bptt", "dni", "dni_aux")
FF_CELL = ["dataset", "arch", "layers"]
RNN_CELL = ["task", "T"]
# The last quarter of a run's logged points describes where its boundary gradients ended up.
LATE_FRACTION = 0.25

SCHEMAS = {"feedforward": "ff_metrics", "rnn": "rnn_metrics", "parallel": "parallel_metrics"}
# What `sgbench aggregate FAMILY` writes into its --out folder (the workflow lists the same names).
OUTPUTS = {
    "feedforward": {"runs": "feedforward_runs.csv", "curves": "feedforward_curves.csv",
                    "table1_md": "feedforward.md", "table1_csv": "feedforward.csv",
                    "unlock_md": "unlock.md", "unlock_csv": "unlock.csv"},
    "rnn": {"runs": "rnn_runs.csv", "curves": "rnn_curves.csv", "md": "rnn.md", "csv": "rnn.csv"},
    "parallel": {"runs": "parallel_runs.csv", "curves": "parallel_curves.csv", "md": "parallel.md",
                 "csv": "parallel.csv", "model": "parallel_model.csv"},
    "diagnostics": {"runs": "diagnostics_runs.csv", "curves": "diagnostics_curves.csv",
                    "fidelity": "diagnostics_fidelity.csv", "md": "diagnostics.md"},
}
# What `sgbench figures FAMILY` draws into its --out folder, each as NAME.png and NAME.pdf.
FIGURES = {
    "feedforward": ("ff_test_error", "unlock_test_error"),
    "rnn": ("rnn_length_vs_T", "rnn_boundary_gradients", "rnn_curriculum"),
    "parallel": ("parallel_speed",),
    "diagnostics": ("diag_fidelity", "diag_placement", "diag_warmup", "diag_sg_cost"),
}
RUN_COLUMNS = {
    "feedforward": ["dataset", "arch", "layers", "method", "update_prob", "seed", "tier", "iterations",
                    "batch_size", "lr", "test_error", "update_fraction", "steps_per_s", "train_time_s",
                    "device", "hardware", "threads", "git_commit", "path"],
    "rnn": ["task", "method", "T", "seed", "tier", "timesteps", "batch_size", "largest_length_solved",
            "N_solved", "R_solved", "bits_per_sequence", "levels_reached", "late_true_grad_norm",
            "late_sg_norm", "late_cosine", "late_norm_ratio", "timesteps_per_s", "train_time_s",
            "device", "hardware", "threads", "git_commit", "path"],
}
CURVE_COLUMNS = {
    "feedforward": ["dataset", "arch", "layers", "method", "update_prob", "seed", "step", "test_error", "train_loss"],
    "rnn": ["task", "method", "T", "seed", "timestep", "bits_per_output_step", "bits_per_sequence", "length",
            "boundary_true_grad_norm", "boundary_sg_norm", "boundary_cosine", "elapsed_s"],
}
STAT_COLUMNS = ["n", "mean", "std", "ci95", "ci95_low", "ci95_high"]


class MetricsError(ValueError):
    pass


# ---------------------------------------------------------------- reading runs

def read_metrics(path: Path, family: str = "feedforward", tier: str | None = None) -> dict:
    """One run's metrics, checked against its family's schema (and tier, when given)."""
    try:
        metrics = json.loads(Path(path).read_text())
        runio.validate(metrics, SCHEMAS[family])
    except (OSError, json.JSONDecodeError) as e:
        raise MetricsError(f"{path}: cannot read metrics ({e}); rerun that run") from e
    except jsonschema.ValidationError as e:
        raise MetricsError(f"{path}: not a complete sgbench {family} metrics file ({e.message}); rerun that run") from e
    if tier is not None and metrics["tier"] != tier:
        raise MetricsError(f"{path}: a run of tier {metrics['tier']!r}, not of tier {tier!r}")
    return metrics


def _where(meta: dict) -> dict:
    hw = meta["hardware"]
    return {"device": meta["device"], "hardware": hw.get("gpu") or hw["cpu"], "threads": hw["torch_threads"],
            "git_commit": meta["git_commit"]}


def _curve_rows(path, curves: dict, names: list[str], keys: dict) -> list[dict]:
    """Long-form rows of equal-length curves; a ragged file is an error naming it."""
    present = [n for n in names if n in curves]
    lengths = {n: len(curves[n]) for n in present}
    if len(set(lengths.values())) > 1:
        raise MetricsError(f"{path}: curves of unequal length {lengths}; rerun that run")
    return [keys | {n: curves[n][i] for n in present} for i in range(len(curves[present[0]]))]


def _mean_or_none(values):
    """Mean of a per-layer list (older runs have none: None)."""
    return None if values is None else float(np.mean(values))


def ff_run_row(path, m: dict) -> dict:
    """What a feed-forward run was (data variant actually read, update_prob 1 when older runs lack it),
    what it measured, and where it ran."""
    c = m["config"]
    return {"dataset": m["dataset"]["variant"], "arch": c["arch"], "layers": c["layers"], "method": c["method"],
            "update_prob": float(c.get("update_prob", 1.0)), "seed": c["seed"], "tier": m["tier"],
            "iterations": c["iterations"], "batch_size": c["batch_size"], "lr": c["lr"],
            "test_error": m["final"]["test_error"], "update_fraction": _mean_or_none(m["final"].get("update_fraction")),
            "steps_per_s": m["timing"]["steps_per_s"], "train_time_s": m["timing"]["train_time_s"],
            **_where(m["meta"]), "path": str(path)}


def _late_mean(values: list) -> float:
    """Mean of the non-null values in the last LATE_FRACTION of a curve (NaN if none)."""
    tail = values[len(values) - max(1, math.ceil(LATE_FRACTION * len(values))):] if values else []
    tail = [v for v in tail if v is not None]
    return float(np.mean(tail)) if tail else math.nan


def rnn_run_row(path, m: dict) -> dict:
    """What an RNN run was, the curriculum it reached, and where its boundary gradients ended up
    (late means of the true and synthetic norms and their cosine; NaN for BPTT, which has no SG)."""
    c, f, curves = m["config"], m["final"], m["curves"]
    true_norm = _late_mean(curves.get("boundary_true_grad_norm", []))
    sg_norm = _late_mean(curves.get("boundary_sg_norm", []))
    return {"task": c["task"], "method": c["method"], "T": c["T"], "seed": c["seed"], "tier": m["tier"],
            "timesteps": c["timesteps"], "batch_size": c.get("batch_size"),
            "largest_length_solved": f["largest_length_solved"], "N_solved": f["N_solved"],
            "R_solved": f.get("R_solved"), "bits_per_sequence": f.get("bits_per_sequence"),
            "levels_reached": len(m["curriculum"]), "late_true_grad_norm": true_norm, "late_sg_norm": sg_norm,
            "late_cosine": _late_mean(curves.get("boundary_cosine", [])),
            "late_norm_ratio": sg_norm / true_norm if true_norm > 0 else math.nan,
            "timesteps_per_s": m["timing"]["timesteps_per_s"], "train_time_s": m["timing"]["train_time_s"],
            **_where(m["meta"]), "path": str(path)}


def collect(family: str, paths, tier: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves): one row per run, and every logged point of every run in long form."""
    runs, curves = [], []
    for path in paths:
        m = read_metrics(path, family, tier)
        if family == "feedforward":
            row = ff_run_row(path, m)
            keys = {k: row[k] for k in CURVE_COLUMNS[family][:6]}
            curves += _curve_rows(path, m["curves"], ["step", "test_error", "train_loss"], keys)
        else:
            row = rnn_run_row(path, m)
            keys = {k: row[k] for k in CURVE_COLUMNS[family][:4]}
            curves += _curve_rows(path, m["curves"], CURVE_COLUMNS[family][4:], keys)
        runs.append(row)
    runs_df = pd.DataFrame(runs, columns=RUN_COLUMNS[family])
    refuse_duplicates(runs_df, CURVE_COLUMNS[family][:6 if family == "feedforward" else 4])
    return runs_df, pd.DataFrame(curves, columns=CURVE_COLUMNS[family])


def refuse_duplicates(runs: pd.DataFrame, keys: list[str]) -> None:
    """Two files of the same run (same cell, method, seed) would count one seed twice."""
    twice = runs[runs.duplicated(keys, keep=False)]
    if not twice.empty:
        raise MetricsError("the same run twice: " + ", ".join(twice["path"]) + "; keep one of each")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV written by `aggregate` (an empty family has just the header)."""
    return pd.read_csv(path)


# ---------------------------------------------------------------- statistics

def seed_stats(values) -> dict:
    """n, mean, sample std and the 95 % Student-t interval of the mean over seeds (NaN for n = 1)."""
    v = np.asarray(pd.Series(values).dropna(), dtype=float)
    n = len(v)
    if n == 0:
        return dict(n=0, mean=math.nan, std=math.nan, ci95=math.nan, ci95_low=math.nan, ci95_high=math.nan)
    mean = float(v.mean())
    if n == 1:
        return dict(n=1, mean=mean, std=math.nan, ci95=math.nan, ci95_low=math.nan, ci95_high=math.nan)
    std = float(v.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + CI_LEVEL / 2, n - 1)) * std / math.sqrt(n)
    return dict(n=n, mean=mean, std=std, ci95=half, ci95_low=mean - half, ci95_high=mean + half)


def t_interval(values) -> tuple[float, float]:
    """(low, high) of the 95 % t-interval: the error-bar function of the figures, same as the tables'."""
    s = seed_stats(values)
    return (s["mean"], s["mean"]) if s["n"] < 2 else (s["ci95_low"], s["ci95_high"])


def group_stats(runs: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """keys + n, mean, std, ci95 (half-width), ci95_low, ci95_high of `value` over each group's seeds."""
    if runs.empty:
        return pd.DataFrame(columns=keys + STAT_COLUMNS)
    rows = [dict(zip(keys, k if isinstance(k, tuple) else (k,))) | seed_stats(g[value])
            for k, g in runs.groupby(keys, sort=True)]
    return pd.DataFrame(rows, columns=keys + STAT_COLUMNS)


def cell_text(s, digits: int = 2) -> str:
    """'mean ± ci95 (n=k)' for a stats row (or dict)."""
    if s["n"] == 0 or pd.isna(s["mean"]):
        return "—"
    if s["n"] == 1 or pd.isna(s["ci95"]):
        return f"{s['mean']:.{digits}f} (n={int(s['n'])})"
    return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f} (n={int(s['n'])})"


def ordered(values, order) -> list:
    """Known values in the given order, then any others sorted: tables list methods the same way."""
    values = list(dict.fromkeys(values))
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


# ---------------------------------------------------------------- tables

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


def rnn_stats(rnn_runs: pd.DataFrame, value: str = "largest_length_solved") -> pd.DataFrame:
    return group_stats(rnn_runs, ["task", "method", "T"], value)


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
    return (f"Tier: **{tier}**. Budget: {budget_text(runs, budget, unit)}. Data: {datasets}. "
            f"Seeds: {seeds}. Hardware: {where}.\n\nCells: {CI_TEXT}.")


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


# ---------------------------------------------------------------- writing

def _write_csv(path: Path, df: pd.DataFrame) -> None:
    runio.atomic_write_bytes(path, df.to_csv(index=False).encode())


def _write_text(path: Path, text: str) -> None:
    runio.atomic_write_bytes(path, text.encode())


def aggregate(family: str, paths, tier: str, out_dir: Path) -> pd.DataFrame:
    """Write every table of a family into out_dir (names in OUTPUTS); returns the runs table."""
    out = {k: Path(out_dir) / v for k, v in OUTPUTS[family].items()}
    if family == "parallel":  # multi-worker runs: sgbench/speed.py
        from . import speed
        written = speed.tables(paths, tier)
        for key, value in written.items():
            (_write_text if isinstance(value, str) else _write_csv)(out[key], value)
        return written["runs"]
    if family == "diagnostics":  # feed-forward runs, tabled by ablation (sgbench/diagnostics.py)
        from . import diagnostics
        runs, curves, fidelity = diagnostics.collect(paths, tier)
        for key, df in (("runs", runs), ("curves", curves), ("fidelity", fidelity)):
            _write_csv(out[key], df)
        _write_text(out["md"], diagnostics.markdown(runs, fidelity, tier))
        return runs
    sort = {"feedforward": FF_CELL + ["method", "update_prob", "seed"], "rnn": ["task", "T", "method", "seed"]}[family]
    runs, curves = collect(family, paths, tier)
    runs = runs.sort_values(sort, ignore_index=True)
    _write_csv(out["runs"], runs)
    _write_csv(out["curves"], curves)
    if family == "feedforward":
        _write_csv(out["table1_csv"], table1_stats(runs))
        _write_text(out["table1_md"], table1_markdown(runs, tier))
        _write_csv(out["unlock_csv"], unlock_stats(runs))
        _write_text(out["unlock_md"], unlock_markdown(runs, tier))
    else:
        _write_csv(out["csv"], rnn_stats(runs))
        _write_text(out["md"], rnn_markdown(runs, tier))
    return runs
