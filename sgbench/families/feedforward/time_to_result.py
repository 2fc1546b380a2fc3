"""Time to result (issue #23 item 3; the protocol of MLCommons AlgoPerf, on a fixed workload and fixed
hardware): for each feed-forward cell, targets on validation error taken from backprop's own curve at
the tier, and for every method the iterations and training seconds to reach each one.

Targets: for each fraction f of TARGET_FRACTIONS, the worst validation error over backprop's seeds at
the first evaluation at or after f of its budget -- so every backprop seed reaches target f by f of the
budget, and "not within budget" for another method is a result about it. A run that never reaches a
target within its budget (or diverged first) takes ∞ there, never a dropped seed: a method's mean is ∞
as soon as one seed is. Torch-free.
"""
from __future__ import annotations

import math

import pandas as pd

from ...analysis.stats import seed_stats
from ...analysis.tables import net_label, time_to_target
from ...catalog import FF_METHODS, baseline

BASELINE = baseline("feedforward")  # the method the others are measured against (its catalog row)

FF_CELL = ["dataset", "arch", "layers"]
TARGET_FRACTIONS = (0.25, 0.5, 1.0)
COLUMNS = FF_CELL + ["fraction", "target", "method", "seed", "iterations", "seconds"]


def error_column(curves: pd.DataFrame) -> str:
    """Validation error where the runs logged it (the targets are never set on test error), else test."""
    return "val_error" if "val_error" in curves and curves["val_error"].notna().any() else "test_error"


def targets(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per cell and fraction: the target (see the module docstring); cells without backprop have none."""
    column, rows = error_column(curves), []
    base = runs[(runs["method"] == BASELINE) & (runs["update_prob"] == 1.0)]
    for cell, g in base.groupby(FF_CELL, sort=True):
        budget = g["iterations"].max()
        seeds = curves.merge(g[FF_CELL + ["method", "update_prob", "seed"]])
        for f in TARGET_FRACTIONS:
            at = [s[s["step"] >= f * budget].sort_values("step")[column].iloc[0]
                  for _, s in seeds.groupby("seed") if (s["step"] >= f * budget).any()]
            if at:
                rows.append(dict(zip(FF_CELL, cell)) | {"fraction": f, "target": float(max(at))})
    return pd.DataFrame(rows, columns=FF_CELL + ["fraction", "target"])


def per_seed(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Every run at p = 1 (every method), every target of its cell: iterations and seconds (∞: never). A run
    with no logged evaluation (diverged before its first) is ∞ too: it is in its cell, not dropped."""
    column, goals, rows = error_column(curves), targets(runs, curves), []
    if goals.empty:
        return pd.DataFrame(columns=COLUMNS)
    keys = FF_CELL + ["method", "seed"]
    logged = dict(tuple(curves[curves["update_prob"] == 1.0].groupby(keys, sort=True)))
    for key in runs[runs["update_prob"] == 1.0][keys].drop_duplicates().sort_values(keys).itertuples(index=False):
        cell, curve = dict(zip(FF_CELL, key[:3])), logged.get(tuple(key), curves.iloc[:0]).sort_values("step")
        elapsed = curve["elapsed_s"] if "elapsed_s" in curve else [math.nan] * len(curve)
        mine = goals[(goals[FF_CELL] == pd.Series(cell)).all(axis=1)]
        for f, target in mine[["fraction", "target"]].itertuples(index=False):
            iterations, seconds = time_to_target(curve["step"], curve[column], elapsed, target)
            rows.append(cell | {"fraction": f, "target": target, "method": key[3], "seed": key[4],
                                "iterations": iterations, "seconds": seconds})
    return pd.DataFrame(rows, columns=COLUMNS)


def _mean(values: pd.Series) -> dict:
    """Mean ± 95 % interval over seeds; ∞ when any seed never reached the target."""
    if (values == math.inf).any():
        return {"mean": math.inf, "ci95": math.nan}
    return seed_stats(values)


def stats(hits: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, fraction, method): seeds, seeds within budget, iterations and seconds (mean ± ci, ∞),
    and the ratio of the mean seconds (and iterations) to backprop's."""
    cols = FF_CELL + ["fraction", "target", "method", "n", "reached", "iterations", "iterations_ci95", "seconds",
                      "seconds_ci95", "ratio_iterations", "ratio_seconds"]
    rows = []
    for key, g in hits.groupby(FF_CELL + ["fraction", "method"], sort=True):
        it, sec = _mean(g["iterations"]), _mean(g["seconds"])
        rows.append(dict(zip(FF_CELL + ["fraction", "method"], key)) | {
            "target": g["target"].iloc[0], "n": len(g), "reached": int((g["iterations"] < math.inf).sum()),
            "iterations": it["mean"], "iterations_ci95": it["ci95"], "seconds": sec["mean"], "seconds_ci95": sec["ci95"]})
    out = pd.DataFrame(rows, columns=cols)
    for value in ("iterations", "seconds"):
        base = out[out["method"] == BASELINE].set_index(FF_CELL + ["fraction"])[value]
        ref = out.set_index(FF_CELL + ["fraction"]).index.map(lambda k: base.get(k, math.nan))
        out[f"ratio_{value}"] = out[value].to_numpy() / ref.to_numpy(dtype=float)
    return out


def _cell(mean: float, ci: float, digits: int) -> str:
    return f"{mean:,.{digits}f}" + ("" if ci != ci else f" ± {ci:,.{digits}f}")


def markdown(table: pd.DataFrame) -> str:
    """One table per net: rows method, columns each target (iterations; seconds; ratio to backprop)."""
    if table.empty:
        return "No cell with backprop's curve at this tier: no targets.\n"
    parts = []
    order = {m: i for i, m in enumerate(FF_METHODS)}
    for cell, g in table.groupby(FF_CELL, sort=True):
        fractions = sorted(g["fraction"].unique())
        head = [f"{100 * f:g} % (val ≤ {g[g['fraction'] == f]['target'].iloc[0]:.2f} %)" for f in fractions]
        lines = [f"**{net_label(dict(zip(FF_CELL, cell)))}**: iterations; seconds; ratio of seconds to backprop's "
                 "(reached: seeds within budget)\n", "| method | " + " | ".join(head) + " |",
                 "| --- |" + " --- |" * len(fractions)]
        for method, m in sorted(g.groupby("method"), key=lambda x: order.get(x[0], 99)):
            cells = []
            for f in fractions:
                r = m[m["fraction"] == f].iloc[0]
                reached = f"({r['reached']}/{r['n']})"
                cells.append(f"∞ {reached}" if r["iterations"] == math.inf else
                             f"{_cell(r['iterations'], r['iterations_ci95'], 0)}; "
                             f"{_cell(r['seconds'], r['seconds_ci95'], 1)} s; {r['ratio_seconds']:.2f}× {reached}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def section(runs: pd.DataFrame, curves: pd.DataFrame) -> list[str]:
    """REPORT.md's time-to-result section (feed-forward, every method at p = 1)."""
    text = ("Targets on validation error from backprop's own curve at this tier: the worst of its seeds at "
            f"{', '.join(f'{100 * f:g} %' for f in TARGET_FRACTIONS)} of its budget (so every backprop seed "
            "reaches each in time). For every method: iterations and training seconds (evaluation excluded) to "
            "the first evaluation at or below the target, mean ± 95 % interval over seeds, and the ratio of its "
            "mean seconds to backprop's. ∞: some seed did not reach it within the budget (or diverged first); it "
            "counts, it is not dropped. Seconds compare methods only on the same hardware (the `What was run` "
            "table names it).\n")
    return ["## Time to result (feed-forward)\n", text, markdown(stats(per_seed(runs, curves)))]
