"""Feed-forward figures: test error vs iterations per net and method ([DNI] Table 1's runs), and
complete unlock / update probability."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ...analysis.plotting import (
    BAND,
    curves_grid,
    footnote,
    in_thousands,
    not_run,
    save,
    seeds_text,
    style,
)
from ...analysis.stats import ordered, t_interval
from ...analysis.tables import NOT_RUN, budget_text, net_label
from ...catalog import TABLE1_METHODS, UNLOCK_METHODS
from .. import get
from . import time_to_result
from .tables import FF_CELL, table1_runs, unlock_cells


def ff_context(runs: pd.DataFrame, tier: str) -> list[str]:
    hardware = ", ".join(sorted(set(runs["device"] + " " + runs["hardware"])))
    return [f"tier {tier}", f"data: {', '.join(sorted(runs['dataset'].unique()))}",
            budget_text(runs, "iterations", "iterations"), hardware]


def ff_curves_by_net(runs: pd.DataFrame, curves: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The curves of `runs`, each row labelled with its net ("mnist FCN-3"), and the nets in table order."""
    data = curves.merge(runs[FF_CELL + ["method", "update_prob", "seed"]])
    data = data.assign(net=data.apply(net_label, axis=1))
    return data, list(dict.fromkeys(data.sort_values(FF_CELL)["net"]))


def ff_test_error(runs: pd.DataFrame, curves: pd.DataFrame, tier: str, stem: Path) -> None:
    """Test error vs iterations, one panel per net and depth, one line per method ([DNI] Table 1 runs)."""
    title = "Feed-forward: test error vs iterations"
    runs = table1_runs(runs)
    if runs.empty:
        return not_run(stem, title, tier)
    data, nets = ff_curves_by_net(runs, curves)
    g = curves_grid(data, "test_error", "test error (%)", "method", "net", nets, title, tier, wrap=4,
                    hue_order=ordered(data["method"], TABLE1_METHODS), aspect=1.2,
                    facet_kws={"sharey": False})
    footnote(g.figure, *ff_context(runs, tier), seeds_text(runs, FF_CELL + ["method"]), BAND)
    save(g.figure, stem)


def unlock_test_error(runs: pd.DataFrame, curves: pd.DataFrame, tier: str, stem: Path) -> None:
    """Per unlock cell: left, every method at p = 1; right, each method run at p < 1, one line per p."""
    title = "Complete unlock and update probability: test error vs iterations"
    runs = unlock_cells(runs)
    if runs.empty:
        return not_run(stem, title, tier)
    data, nets = ff_curves_by_net(runs, curves)
    fig, axes = plt.subplots(len(nets), 2, figsize=(10, 3.2 * len(nets)), squeeze=False)
    for (left, right), net in zip(axes, nets):
        cell = data[data["net"] == net]
        full = cell[cell["update_prob"] == 1.0]
        sns.lineplot(full, x="step", y="test_error", hue="method", errorbar=t_interval, ax=left,
                     hue_order=ordered(full["method"], TABLE1_METHODS + UNLOCK_METHODS))
        left.set_title(f"{net}: methods, every layer updated each step")
        async_methods = cell.loc[cell["update_prob"] < 1.0, "method"].unique()
        partial = cell[cell["method"].isin(async_methods)].assign(
            p=lambda d: d["method"] + ", p = " + d["update_prob"].map("{:g}".format))
        if partial.empty:
            right.text(0.5, 0.5, f"no update probability < 1 {NOT_RUN}", ha="center", transform=right.transAxes)
        else:
            sns.lineplot(partial, x="step", y="test_error", hue="p", errorbar=t_interval, ax=right,
                         hue_order=sorted(partial["p"].unique(), key=lambda s: -float(s.split("= ")[1])))
        right.set_title(f"{net}: layers updated with probability p")
        for ax in (left, right):
            ax.set_xlabel("training iterations (steps)")
            ax.set_ylabel("test error (%)")
    in_thousands(axes)
    fig.suptitle(f"{title} (tier {tier})", y=1.01)
    fig.tight_layout()
    footnote(fig, *ff_context(runs, tier), seeds_text(runs, FF_CELL + ["method", "update_prob"]), BAND)
    save(fig, stem)


def ff_time_to_target(runs: pd.DataFrame, curves: pd.DataFrame, tier: str, stem: Path) -> None:
    """Seconds to each target (backprop's own 25 / 50 / 100 %), one panel per net, one group of bars per
    method; a method that some seed never brought to the target within the budget gets an ∞ mark."""
    title = "Feed-forward: training seconds to a validation-error target"
    table = time_to_result.stats(time_to_result.per_seed(runs, curves)) if not runs.empty else pd.DataFrame()
    if table.empty:
        return not_run(stem, title, tier)
    nets = list(table.groupby(FF_CELL, sort=True))
    fig, axes = plt.subplots(1, len(nets), figsize=(5.5 * len(nets), 3.8), squeeze=False)
    fractions = sorted(table["fraction"].unique())
    for ax, (cell, g) in zip(axes[0], nets):
        methods = ordered(g["method"], TABLE1_METHODS + UNLOCK_METHODS)
        top = max(g.loc[g["seconds"] < float("inf"), "seconds"].max() * 1.3, 1e-3)
        width = 0.8 / len(fractions)
        for j, f in enumerate(fractions):
            part = g[g["fraction"] == f].set_index("method").reindex(methods)
            xs = [i + (j - (len(fractions) - 1) / 2) * width for i in range(len(methods))]
            finite = part["seconds"].where(part["seconds"] < float("inf"))
            ax.bar(xs, finite.fillna(0), width, yerr=part["seconds_ci95"].where(finite.notna()).fillna(0),
                   label=f"{100 * f:g} % target", color=sns.color_palette()[j])
            for x, s in zip(xs, part["seconds"]):
                if s == float("inf"):
                    ax.text(x, top * 0.02, "∞", ha="center", va="bottom", fontsize=11)
        ax.set_xticks(range(len(methods)), methods)
        ax.set_ylim(0, top)
        ax.set_title(net_label(dict(zip(FF_CELL, cell))))
        ax.set_ylabel("training seconds to the target")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{title} (tier {tier}); ∞: not within the budget in some seed", y=1.02)
    fig.tight_layout()
    footnote(fig, *ff_context(runs, tier), seeds_text(runs, FF_CELL + ["method"]), "bars: mean, 95 % interval")
    save(fig, stem)


def draw(tier: str, tables: Path, out_dir: Path) -> list[Path]:
    """Every feed-forward figure from the tables in `tables`; returns the PNG paths."""
    style()
    read, stems = get("feedforward").figure_inputs(tables, out_dir, "runs", "curves")
    ff_test_error(read["runs"], read["curves"], tier, stems["ff_test_error"])
    unlock_test_error(read["runs"], read["curves"], tier, stems["unlock_test_error"])
    ff_time_to_target(read["runs"], read["curves"], tier, stems["ff_time_to_target"])
    return [s.with_suffix(".png") for s in stems.values()]
