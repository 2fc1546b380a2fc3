"""Diagnostics figures: SG fidelity per boundary, DNI placement, warm-up, and the SG model's cost."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ...analysis.plotting import (
    BAND,
    curves_grid,
    footnote,
    not_run,
    save,
    seeds_text,
    style,
)
from ...analysis.stats import t_interval
from ...analysis.tables import NOT_RUN, net_label
from ...catalog import method
from .. import get
from ..feedforward.figures import ff_context
from . import tables


def _diag_net(df: pd.DataFrame) -> pd.Series:
    return df.apply(net_label, axis=1)


def diag_fidelity(runs: pd.DataFrame, fidelity: pd.DataFrame, tier: str, stem: Path) -> None:
    """Cosine(SG, exact gradient) vs step, one line per boundary (by distance from the loss), one panel per
    net / method / placement (warm-up 0, default SG)."""

    title = "Diagnostics: SG fidelity per boundary vs iterations"
    data = fidelity.merge(tables.placement_runs(runs)[tables.KEYS]) if not fidelity.empty else fidelity
    if data.empty:
        return not_run(stem, title, tier)
    data = data.assign(panel=_diag_net(data) + ", " + data["method"] + ", " + data["dni_placement"],
                       d=data["distance"].map("d = {}".format))
    g = curves_grid(data, "cosine", "cosine(SG, exact gradient)", "d", "panel", sorted(data["panel"].unique()), title,
                    tier, hue_order=sorted(data["d"].unique(), key=lambda t: int(t[4:])), aspect=1.3,
                    palette="viridis")
    for ax in g.axes.flat:
        ax.axhline(0, color="0.5", lw=0.8)
    footnote(g.figure, *ff_context(runs, tier), seeds_text(data, ["panel", "d"]), BAND,
             "d: layers between the boundary and the loss (1 = feeds the head); probe batch: first training examples")
    save(g.figure, stem)


def diag_placement(runs: pd.DataFrame, fidelity: pd.DataFrame, tier: str, stem: Path) -> None:
    """Left: final test error vs number of DNIs (0 = backprop); right: late cosine vs distance from the loss,
    one line per placement."""

    title = "Diagnostics: DNI placement"
    data = tables.placement_runs(runs)
    if data.empty or data["dni_boundaries"].nunique() < 2:
        return not_run(stem, title, tier)
    with_sg = data["method"].map(lambda m: method("feedforward", m).uses_sg)  # placement names only SG runs
    data = data.assign(net=_diag_net(data),
                       run=data["method"].where(~with_sg, data["method"] + ", " + data["dni_placement"]))
    late = tables.late_fidelity(runs, fidelity)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    sns.lineplot(data, x="dni_boundaries", y="test_error", hue="net", style="method", errorbar=t_interval,
                 err_style="bars", marker="o", ax=left)
    left.set_xlabel("number of DNI boundaries (0: backprop)")
    left.set_ylabel("final test error (%)")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    if late.empty:
        right.text(0.5, 0.5, f"no probe {NOT_RUN}", ha="center", transform=right.transAxes)
    else:
        late = late.assign(run=_diag_net(late) + ", " + late["method"] + ", " + late["dni_placement"])
        sns.lineplot(late, x="distance", y="cosine", hue="run", errorbar=t_interval, err_style="bars",
                     marker="o", ax=right)
        right.axhline(0, color="0.5", lw=0.8)
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("distance of the boundary from the loss (layers above it)")
    right.set_ylabel("cosine(SG, exact) at the last probe")
    for ax in (left, right):
        ax.legend(fontsize=7)
    fig.suptitle(f"{title} (tier {tier})", y=1.02)
    fig.tight_layout()
    footnote(fig, *ff_context(data, tier), seeds_text(data, ["net", "run"]), BAND)
    save(fig, stem)


def diag_warmup(runs: pd.DataFrame, curves: pd.DataFrame, tier: str, stem: Path) -> None:
    """Test error vs iterations, one line per warm-up fraction w, one panel per net and method."""

    title = "Diagnostics: warm-up of exact backprop, then DNI"
    wruns = tables.warmup_runs(runs)
    if wruns.empty or wruns["warmup"].nunique() < 2:
        return not_run(stem, title, tier)
    data = curves.merge(wruns[tables.KEYS])
    data = data.assign(panel=_diag_net(data) + ", " + data["method"], w=data["warmup"].map(lambda w: f"w = {100 * w:g} %"))
    g = curves_grid(data, "test_error", "test error (%)", "w", "panel", sorted(data["panel"].unique()), title, tier,
                    aspect=1.3, facet_kws={"sharey": False})
    footnote(g.figure, *ff_context(wruns, tier), seeds_text(data, ["panel", "w"]), BAND,
             "the first w % of the iterations are exact backprop while the SG models learn from the true gradient")
    save(g.figure, stem)


def diag_sg_cost(runs: pd.DataFrame, tier: str, stem: Path) -> None:
    """Cost (training steps/s) against final test error, one point per SG architecture (mean ± interval)."""

    title = "Diagnostics: SG model, accuracy vs cost"
    data = tables.sg_runs(runs)
    if data.empty:
        return not_run(stem, title, tier)
    data = data.assign(sg=data.apply(tables.sg_label, axis=1), net=_diag_net(data))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (net, sg), g in data.groupby(["net", "sg"]):
        (x0, x1), (y0, y1) = t_interval(g["steps_per_s"]), t_interval(g["test_error"])
        x, y = g["steps_per_s"].mean(), g["test_error"].mean()
        ax.errorbar(x, y, xerr=[[x - x0], [x1 - x]], yerr=[[y - y0], [y1 - y]], capsize=3, label=f"{net}: {sg}",
                    # circles: a label-conditioned SG
                    fmt="o" if method("feedforward", g["method"].iloc[0]).conditioned else "s")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 2, 5, 10, 20, 50: no crowded minor labels
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training steps/s (log; evaluation excluded)")
    ax.set_ylabel("final test error (%)")
    ax.legend(fontsize=7)
    ax.set_title(f"{title} (tier {tier})")
    footnote(fig, *ff_context(data, tier), seeds_text(data, ["net", "sg"]), "points: mean over seeds (circles: cDNI, "
             "SG sees the label; squares: DNI); bars: 95 % Student-t interval",
             "steps/s depend on the machine and on jobs sharing it")
    save(fig, stem)


def draw(tier: str, tables: Path, out_dir: Path) -> list[Path]:
    """Every diagnostics figure from the tables in `tables`; returns the PNG paths."""
    style()
    read, stems = get("diagnostics").figure_inputs(tables, out_dir, "runs", "curves", "fidelity")
    runs, curves, fidelity = read["runs"], read["curves"], read["fidelity"]
    diag_fidelity(runs, fidelity, tier, stems["diag_fidelity"])
    diag_placement(runs, fidelity, tier, stems["diag_placement"])
    diag_warmup(runs, curves, tier, stems["diag_warmup"])
    diag_sg_cost(runs, tier, stems["diag_sg_cost"])
    return [s.with_suffix(".png") for s in stems.values()]
