"""Parallel-workers figure: samples/s and time to target vs K per method, with the ideal K× line and
the analytic model against the measurement."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from ...analysis.plotting import footnote, not_run, save, seeds_text, style
from ...analysis.stats import ordered, t_interval
from ...analysis.tables import budget_text, net_label, read_table
from .. import get
from ..feedforward.tables import FF_CELL
from .tables import OUTPUTS

FIGURES = get("parallel").figures  # names: the registry (sgbench/families/__init__.py)


def parallel_speed(runs: pd.DataFrame, model: pd.DataFrame, tier: str, stem: Path) -> None:
    """Per net: samples/s vs K (ideal: K x single-process backprop), time to target vs K, and the
    speedup over single-process backprop, measured (points) beside the analytic model (lines)."""
    title = "Parallel workers: throughput, time to target, speedup"
    if runs.empty:
        return not_run(stem, title, tier)
    nets = list(dict.fromkeys(runs.sort_values(FF_CELL).apply(net_label, axis=1)))
    fig, axes = plt.subplots(len(nets), 3, figsize=(13, 3.4 * len(nets)), squeeze=False)
    order = ordered(runs["method"], ("backprop", "cdni", "dni"))
    palette = dict(zip(order, sns.color_palette(n_colors=len(order))))
    for row, net in zip(axes, nets):
        data = runs[runs.apply(net_label, axis=1) == net]
        for ax, y, label in ((row[0], "samples_per_s", "samples / s"),
                             (row[1], "time_to_target_s", f"s to {data['target_error'].iloc[0]:g} % test error")):
            sns.lineplot(data, x="workers", y=y, hue="method", hue_order=order, palette=palette,
                         errorbar=t_interval, err_style="bars", marker="o", ax=ax, legend=ax is row[0])
            ax.set(xlabel="workers K", ylabel=label, title=net)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        single = data[(data["method"] == "backprop") & (data["workers"] == 1)]["samples_per_s"].mean()
        ks = sorted(data["workers"].unique())
        row[0].plot(ks, [k * single for k in ks], ls=":", color="0.4", label="ideal: K × single-process backprop")
        row[0].legend(fontsize=7)
        cell = model[model.apply(net_label, axis=1) == net] if not model.empty else model
        for method, g in cell.groupby("method"):
            row[2].plot(g["workers"], g["predicted_speedup"], ls="--", color=palette.get(method), label=f"{method} model")
            row[2].plot(g["workers"], g["measured_speedup"], "o", color=palette.get(method), label=f"{method} measured")
        kmax = int(cell["workers"].max()) if not cell.empty else max(ks)
        row[2].plot([1, kmax], [1, kmax], ls=":", color="0.4", label="ideal")
        row[2].set(xlabel="workers K", ylabel="speedup over 1-process backprop", title=f"{net}: model vs measured")
        row[2].xaxis.set_major_locator(MaxNLocator(integer=True))
        row[2].legend(fontsize=7)
    fig.suptitle(f"{title} (tier {tier})", y=1.02)
    hardware = ", ".join(sorted(set(runs["device"] + " " + runs["hardware"])))
    footnote(fig, f"tier {tier}", budget_text(runs, "iterations", "iterations"), hardware,
             f"{int(runs['threads'].max())} thread(s) per worker",
             seeds_text(runs, FF_CELL + ["method", "workers"]),
             "backprop at K > 1: locked pipeline", "bars: 95 % Student-t interval; time to target: runs that reached it")
    fig.tight_layout()
    save(fig, stem)


def draw(tier: str, tables: Path, out_dir: Path) -> list[Path]:
    """Every parallel figure from the tables in `tables`; returns the PNG paths."""
    style()
    runs = read_table(Path(tables) / OUTPUTS["runs"])
    stems = {name: Path(out_dir) / name for name in FIGURES}
    parallel_speed(runs, read_table(Path(tables) / OUTPUTS["model"]), tier, stems["parallel_speed"])
    return [s.with_suffix(".png") for s in stems.values()]
