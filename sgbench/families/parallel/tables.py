"""The `parallel` family's tables and figure: throughput and time to target on K workers, the
speedup over single-process backprop, and the analytic model's predictions (model.py)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...analysis.stats import ordered, seed_stats
from ...analysis.tables import (
    NOT_RUN,
    context_lines,
    curve_rows,
    net_label,
    read_metrics,
    refuse_duplicates,
    run_status,
    write_csv,
    write_text,
)
from ...catalog import PARALLEL_METHODS as METHODS
from .. import get
from .model import balanced_split, predicted_step_s

OUTPUTS = get("parallel").outputs  # file names: the registry (sgbench/families/__init__.py)
CELL = ["dataset", "arch", "layers"]
RUN_COLUMNS = ["dataset", "arch", "layers", "method", "workers", "seed", "tier", "iterations", "batch_size",
               "split", "samples_per_s", "step_ms", "predicted_step_ms", "time_to_target_s", "target_error",
               "test_error", "wait_fraction", "link_latency_ms", "unit_flops", "unit_step_ms", "unit_cut_ms",
               "device", "hardware", "threads", "git_commit", "status", "path"]
CURVE_COLUMNS = ["dataset", "arch", "layers", "method", "workers", "seed", "step", "test_error", "train_loss",
                 "elapsed_s"]
MODEL_COLUMNS = CELL + ["method", "workers", "split", "predicted_step_ms", "predicted_speedup", "measured_speedup"]


def _ms(values) -> str:
    return ",".join(f"{1e3 * v:.4g}" for v in values)


def _floats(text) -> list[float]:
    return [float(v) for v in str(text).split(",")]


def run_row(path, m: dict) -> dict:
    c, t = m["config"], m["timing"]
    waits = [w["wait_s"] / w["train_s"] for w in t["workers"] if w["train_s"] > 0]
    hw = m["meta"]["hardware"]
    return {"dataset": m["dataset"]["variant"], "arch": c["arch"], "layers": c["layers"], "method": c["method"],
            "workers": c["workers"], "seed": c["seed"], "tier": m["tier"], "iterations": c["iterations"],
            "batch_size": c["batch_size"], "split": ",".join(map(str, m["model"]["split"])),
            "samples_per_s": t["samples_per_s"], "step_ms": 1e3 * t["step_s"],
            "predicted_step_ms": 1e3 * t["predicted_step_s"], "time_to_target_s": t["time_to_target_s"],
            "target_error": c["target_error"], "test_error": m["final"]["test_error"],
            "wait_fraction": float(np.mean(waits)) if waits else math.nan,
            "link_latency_ms": 1e3 * t["link_latency_s"], "unit_flops": ",".join(f"{v:.6g}" for v in m["model"]["unit_flops"]),
            "unit_step_ms": _ms(t["unit_step_s"]), "unit_cut_ms": _ms(t["unit_cut_s"]),
            "device": m["meta"]["device"], "hardware": hw.get("gpu") or hw["cpu"], "threads": c["threads"],
            "git_commit": m["meta"]["git_commit"], "status": run_status(m), "path": str(path)}


def collect(paths, tier: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs, curves = [], []
    for path in paths:
        m = read_metrics(path, get("parallel").schema, tier)
        row = run_row(path, m)
        keys = {k: row[k] for k in CURVE_COLUMNS[:6]}
        curves += curve_rows(path, m["curves"], CURVE_COLUMNS[6:], keys)
        runs.append(row)
    runs = pd.DataFrame(runs, columns=RUN_COLUMNS)
    refuse_duplicates(runs, CURVE_COLUMNS[:6])
    return runs.sort_values(CELL + ["method", "workers", "seed"], ignore_index=True), pd.DataFrame(curves, columns=CURVE_COLUMNS)


def speed_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, method, K): samples/s and time to target (runs that never reach it: inf) over seeds,
    the speedup of the mean throughput over single-process backprop's, and the ideal K."""
    keys = CELL + ["method", "workers"]
    if runs.empty:
        return pd.DataFrame(columns=keys + ["n", "samples_per_s", "samples_per_s_ci95", "speedup", "ideal",
                                            "time_to_target_s", "time_to_target_s_ci95", "reached", "test_error",
                                            "test_error_ci95", "step_ms", "predicted_step_ms", "wait_fraction"])
    rows = []
    for key, g in runs.groupby(keys, sort=True):
        cell = dict(zip(keys, key))
        base = runs[(runs[CELL] == pd.Series(key[:3], index=CELL)).all(axis=1)
                    & (runs["method"] == "backprop") & (runs["workers"] == 1)]
        speed, error = seed_stats(g["samples_per_s"]), seed_stats(g["test_error"])
        reached = g["time_to_target_s"].notna()
        target = seed_stats(g["time_to_target_s"]) if reached.all() else {"mean": math.inf, "ci95": math.nan}
        rows.append(cell | {
            "n": len(g), "samples_per_s": speed["mean"], "samples_per_s_ci95": speed["ci95"],
            "speedup": speed["mean"] / base["samples_per_s"].mean() if not base.empty else math.nan,
            "ideal": float(key[4]), "time_to_target_s": target["mean"], "time_to_target_s_ci95": target["ci95"],
            "reached": f"{int(reached.sum())}/{len(g)}", "test_error": error["mean"], "test_error_ci95": error["ci95"],
            "step_ms": g["step_ms"].mean(), "predicted_step_ms": g["predicted_step_ms"].mean(),
            "wait_fraction": g["wait_fraction"].mean()})
    return pd.DataFrame(rows)


def model_predictions(runs: pd.DataFrame) -> pd.DataFrame:
    """The analytic model for every K from 1 to the number of units, per cell and method: per-unit
    compute from the runs' own profiles (mean over runs), the message latency measured between
    workers (mean over runs with K >= 2), stages cut as the runner cuts them (balanced by FLOPs).
    Speedup: over single-process backprop's predicted step."""
    rows = []
    for cell, g in runs.groupby(CELL, sort=True):
        multi = g[g["workers"] > 1]
        latency = multi["link_latency_ms"].mean() / 1e3 if not multi.empty else 0.0
        profiles = {}
        for method, gm in g.groupby("method"):
            profiles[method] = (np.mean([_floats(v) for v in gm["unit_step_ms"]], axis=0) / 1e3,
                                np.mean([_floats(v) for v in gm["unit_cut_ms"]], axis=0) / 1e3,
                                _floats(gm["unit_flops"].iloc[0]))
        if "backprop" not in profiles:
            continue
        single = sum(profiles["backprop"][0])
        measured_single = g[(g["method"] == "backprop") & (g["workers"] == 1)]["samples_per_s"].mean()
        for method, (unit_s, cut_s, flops) in profiles.items():
            for k in range(1, len(unit_s) + 1):
                split = balanced_split(flops, k)
                step = predicted_step_s(method, list(unit_s), list(cut_s), split, latency)
                measured = g[(g["method"] == method) & (g["workers"] == k)]["samples_per_s"].mean()
                rows.append(dict(zip(CELL, cell)) | {
                    "method": method, "workers": k, "split": ",".join(map(str, split)),
                    "predicted_step_ms": 1e3 * step, "predicted_speedup": single / step,
                    "measured_speedup": measured / measured_single if measured_single > 0 else math.nan})
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def _pm(mean, half, digits=0) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if math.isinf(mean):
        return "not reached"
    return f"{mean:.{digits}f}" + ("" if pd.isna(half) else f" ± {half:.{digits}f}")


def markdown(runs: pd.DataFrame, stats: pd.DataFrame, model: pd.DataFrame, tier: str) -> str:
    title = "# Parallel workers: throughput and time to target error\n\n"
    if runs.empty:
        return title + f"Tier **{tier}**: {NOT_RUN}.\n"
    target = ", ".join(f"{t:g} %" for t in sorted(runs["target_error"].unique()))
    lines = [title + context_lines(runs, tier, "iterations", "iterations",
                                          ", ".join(sorted(runs["dataset"].unique()))),
             f"\nK workers = K processes (torch.distributed), each with the thread count shown. backprop at K = 1 "
             f"is single-process backprop, at K > 1 the locked pipeline; dni / cdni update each stage at once from "
             f"its SG. Speedup: mean samples/s over single-process backprop's (ideal: K). Time to target: training "
             f"seconds (evaluation off the clock) until the test error first reaches {target}; 'not reached' when "
             f"a seed never did. Wait: the share of a worker's time spent blocked on a neighbour (mean over "
             f"workers). Model: the analytic model's step time (sgbench/families/parallel/model.py).\n"]
    for cell, g in stats.groupby(CELL, sort=True):
        lines += [f"\n## {net_label(dict(zip(CELL, cell)))}\n",
                  "| method | K | split | samples/s | speedup (ideal) | time to target (s) | reached | "
                  "test error (%) | step ms: measured / model | wait |",
                  "| --- | ---: | --- | --- | --- | --- | --- | --- | --- | ---: |"]
        order = {m: i for i, m in enumerate(ordered(g["method"], METHODS))}
        for r in g.sort_values(["method", "workers"], key=lambda c: c.map(order) if c.name == "method" else c).itertuples():
            split = runs[(runs["method"] == r.method) & (runs["workers"] == r.workers)]["split"].iloc[0]
            lines.append(f"| {r.method} | {r.workers} | {split} | {_pm(r.samples_per_s, r.samples_per_s_ci95)} | "
                         f"{r.speedup:.2f} ({r.ideal:g}) | {_pm(r.time_to_target_s, r.time_to_target_s_ci95, 1)} | "
                         f"{r.reached} | {_pm(r.test_error, r.test_error_ci95, 2)} | "
                         f"{r.step_ms:.2f} / {r.predicted_step_ms:.2f} | {r.wait_fraction:.0%} |")
    if not model.empty:
        lines += ["\n## The analytic model for more workers\n",
                  "Predicted speedup over single-process backprop (measured where a run exists), stages cut as "
                  "the runner cuts them. Per-unit compute comes from the runs' own profiles and the message "
                  "latency from their K ≥ 2 runs; workers are assumed to have a core (or GPU) each.\n"]
        table = model.assign(cell=model.apply(net_label, axis=1),
                             value=[f"{p:.2f}" + ("" if pd.isna(m) else f" ({m:.2f})")
                                    for p, m in zip(model["predicted_speedup"], model["measured_speedup"])])
        pivot = table.pivot(index=["cell", "method"], columns="workers", values="value").fillna("—")
        pivot.columns = [f"K = {k}" for k in pivot.columns]
        lines.append(pivot.reset_index().to_markdown(index=False))
    return "\n".join(lines) + "\n"


def tables(paths, tier: str) -> dict:
    """What `sgbench aggregate parallel` writes, by OUTPUTS key: DataFrames (CSV) and Markdown."""
    runs, curves = collect(paths, tier)
    stats, model = speed_stats(runs), model_predictions(runs)
    return {"runs": runs, "curves": curves, "csv": stats, "model": model, "md": markdown(runs, stats, model, tier)}


def aggregate(paths, tier: str, out_dir: Path) -> pd.DataFrame:
    """Write every parallel table into out_dir (names in OUTPUTS); returns the runs table."""
    written = tables(paths, tier)
    for key, value in written.items():
        (write_text if isinstance(value, str) else write_csv)(Path(out_dir) / OUTPUTS[key], value)
    return written["runs"]
