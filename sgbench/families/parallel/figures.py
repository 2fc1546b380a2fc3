"""The parallel family's figures: test error against wall-clock seconds per method at each K (the
picture that answers 'does it train faster, and faster than data parallelism?'), and throughput
against K for every method beside the analytic model up to K = 16."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from ...analysis.plotting import footnote, not_run, save, seeds_text, style
from ...analysis.stats import t_interval
from ...analysis.tables import budget_text, net_label
from ...catalog import baseline
from .. import get
from .config import METHODS
from .tables import CELL, VARIANT, variant_label

BASELINE = baseline("parallel")  # the method the others are measured against (its catalog row)


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(variant=[variant_label(m, s) for m, s in zip(frame["method"], frame["late_sg"])],
                        net=frame.apply(net_label, axis=1))


def _palette(variants) -> tuple[list, dict]:
    order = sorted(set(variants), key=lambda v: (list(METHODS).index(v.split(" ")[0]) if v.split(" ")[0] in METHODS
                                                 else len(METHODS), v))
    return order, dict(zip(order, sns.color_palette("tab10", n_colors=max(len(order), 1))))


def _context(runs: pd.DataFrame, tier: str) -> list[str]:
    hardware = ", ".join(sorted(set(runs["device"] + " " + runs["hardware"])))
    return [f"tier {tier}", budget_text(runs, "iterations", "iterations"), hardware,
            f"{int(runs['threads'].max())} thread(s) per worker", seeds_text(runs, CELL + VARIANT + ["workers"])]


def error_vs_time(runs: pd.DataFrame, curves: pd.DataFrame, stats: pd.DataFrame, tier: str, stem: Path) -> None:
    """Per net (rows) and K (columns): test error against training seconds, one line per method
    (mean over repetitions at each evaluation); dotted: the headline target."""
    title = "Test error against wall-clock training seconds, per method and K workers"
    if runs.empty:
        return not_run(stem, title, tier)
    curves = _labelled(curves)
    nets = sorted(curves["net"].unique())
    ks = sorted(curves["workers"].unique())
    order, palette = _palette(curves["variant"])
    fig, axes = plt.subplots(len(nets), len(ks), figsize=(4.6 * len(ks), 3.4 * len(nets)), squeeze=False, sharey="row")
    for row, net in zip(axes, nets):
        for ax, k in zip(row, ks):
            panel = curves[(curves["net"] == net) & (curves["workers"] == k)]
            mean = panel.groupby(["variant", "step"], as_index=False)[["elapsed_s", "test_error"]].mean()
            for variant in (v for v in order if v in set(mean["variant"])):
                line = mean[mean["variant"] == variant]
                ax.plot(line["elapsed_s"], line["test_error"], marker=".", color=palette[variant], label=variant)
            target = stats[(stats.apply(net_label, axis=1) == net)]["target_error"].dropna()
            if not target.empty:
                ax.axhline(float(target.iloc[0]), ls=":", color="0.4", label=f"target {float(target.iloc[0]):g} %")
            ax.set(xlabel="training seconds", ylabel="test error (%)", title=f"{net}, K = {k}")
            ax.legend(fontsize=7)
    fig.suptitle(f"{title} (tier {tier})", y=1.02)
    footnote(fig, *_context(runs, tier), "evaluation off the clock; lines: mean over repetitions at each evaluation")
    fig.tight_layout()
    save(fig, stem)


def speed(runs: pd.DataFrame, model: pd.DataFrame, tier: str, stem: Path) -> None:
    """Per net: samples/s against K for every method (points: measured, 95 % t-interval; dashed: the
    analytic model to K = 16), and the measured / predicted ratio at every measured K."""
    title = "Throughput against K workers, every method, measured and modelled"
    if runs.empty:
        return not_run(stem, title, tier)
    runs, model = _labelled(runs), _labelled(model) if not model.empty else model
    nets = sorted(runs["net"].unique())
    order, palette = _palette(list(runs["variant"]) + (list(model["variant"]) if not model.empty else []))
    fig, axes = plt.subplots(len(nets), 2, figsize=(12, 3.8 * len(nets)), squeeze=False)
    for (ax, ax_ratio), net in zip(axes, nets):
        data = runs[runs["net"] == net]
        sns.lineplot(data, x="workers", y="samples_per_s", hue="variant", hue_order=[v for v in order if v in set(data["variant"])],
                     palette=palette, errorbar=t_interval, err_style="bars", marker="o", linestyle="",
                     ax=ax, legend=True)
        cell = model[model["net"] == net] if not model.empty else model
        for variant, g in (cell.groupby("variant") if not cell.empty else ()):
            ax.plot(g["workers"], g["predicted_samples_per_s"], ls="--", color=palette.get(variant), lw=1)
            measured = g.dropna(subset=["measured_over_predicted"])
            ax_ratio.plot(measured["workers"], measured["measured_over_predicted"], "o-", color=palette.get(variant),
                          label=variant)
        single = data[(data["method"] == BASELINE) & (data["workers"] == 1)]["samples_per_s"].mean()
        kmax = int(cell["workers"].max()) if not cell.empty else int(data["workers"].max())
        ax.plot([1, kmax], [single, kmax * single], ls=":", color="0.4", label="ideal: K × single-process backprop")
        ax.set(xlabel="workers K", ylabel="samples / s", title=f"{net}: measured (points) and model (dashed)",
               yscale="log")
        ax.legend(fontsize=7)
        ax_ratio.axhline(1.0, ls=":", color="0.4")
        ax_ratio.set(xlabel="workers K", ylabel="measured / predicted samples/s", title=f"{net}: the model's check")
        ax_ratio.legend(fontsize=7)
        for a in (ax, ax_ratio):
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"{title} (tier {tier})", y=1.02)
    footnote(fig, *_context(runs, tier), "backprop at K > 1: the locked pipeline",
             "bars: 95 % Student-t interval; model: one core (or GPU) per worker")
    fig.tight_layout()
    save(fig, stem)


def draw(tier: str, tables: Path, out_dir: Path) -> list[Path]:
    """Every parallel figure from the tables in `tables` (as `aggregate` wrote them); the PNG paths."""
    style()
    read, stems = get("parallel").figure_inputs(tables, out_dir, "runs", "curves", "csv", "model")
    error_vs_time(read["runs"], read["curves"], read["csv"], tier, stems["parallel_error_vs_time"])
    speed(read["runs"], read["model"], tier, stems["parallel_speed"])
    return [s.with_suffix(".png") for s in stems.values()]
