"""RNN figures: largest length solved vs T (with [DNI]'s recalled values), the gradient at the
window boundary (the SG's target vs the SG, cosine), and the curriculum's progress."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from ...analysis.plotting import (
    BAND,
    footnote,
    in_thousands,
    not_run,
    save,
    seeds_text,
    style,
)
from ...analysis.reference import load_reference
from ...analysis.stats import ordered, t_interval
from ...analysis.tables import budget_text
from ...catalog import RNN_METHODS
from .. import get


def rnn_palette(methods) -> dict:
    """One colour per RNN method, the same in every panel and figure."""
    names = list(RNN_METHODS) + sorted(set(methods) - set(RNN_METHODS))
    colours = dict(zip(names, sns.color_palette(n_colors=len(names))))
    return {m: colours[m] for m in ordered(methods, RNN_METHODS)}


def rnn_context(runs: pd.DataFrame, tier: str) -> list[str]:
    hardware = ", ".join(sorted(set(runs["device"] + " " + runs["hardware"])))
    setup = ", ".join(f"{a} layout / {b} lengths" for a, b in runs[["layout", "schedule"]].drop_duplicates()
                      .itertuples(index=False)) if "layout" in runs else ""
    return [f"tier {tier}", f"tasks: {', '.join(sorted(runs['task'].unique()))} (generated; {setup})",
            budget_text(runs, "timesteps", "stream time steps"), hardware]


def rnn_length_vs_T(runs: pd.DataFrame, tier: str, stem: Path) -> None:
    """Largest length solved vs truncation T, per task and method; [DNI]'s (recalled) values hollow."""
    title = "RNN: largest sequence length solved vs truncation window T"
    if runs.empty:
        return not_run(stem, title, tier)
    tasks = sorted(runs["task"].unique())
    methods = ordered(runs["method"], RNN_METHODS)
    palette = rnn_palette(methods)
    paper = paper_rnn_lengths()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        ours = runs[runs["task"] == task]
        sns.lineplot(ours, x="T", y="largest_length_solved", hue="method", hue_order=methods, palette=palette,
                     errorbar=t_interval, err_style="bars", marker="o", ax=ax)
        sns.stripplot(ours, x="T", y="largest_length_solved", hue="method", hue_order=methods, palette=palette,
                      native_scale=True, dodge=False, alpha=0.35, size=4, legend=False, ax=ax)
        theirs = paper[(paper["task"] == task) & paper["method"].isin(methods)]
        for method, ref in theirs.groupby("method"):
            ax.plot(ref["T"], ref["length"], ls="--", marker="o", mfc="none", color=palette[method],
                    label=f"{method} [DNI] ({ref['status'].iloc[0]})")
        ax.set_title(task)
        ax.set_xticks(sorted(set(ours["T"]) | set(theirs["T"])))
        ax.set_xlabel("truncation window T (time steps)")
        ax.set_ylabel("largest length solved (vectors)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{title} (tier {tier})", y=1.02)
    fig.tight_layout()
    footnote(fig, *rnn_context(runs, tier), seeds_text(runs, ["task", "method", "T"]), BAND,
             "dashed: [DNI]'s values, after far longer training")
    save(fig, stem)


def paper_rnn_lengths() -> pd.DataFrame:
    """[DNI]'s largest-length table in long form (task, method, T, length, status)."""
    ref = load_reference()["rnn_largest_length"]
    rows = [{"task": r["task"], "method": r["method"], "T": int(k[1:]), "length": v, "status": ref["status"]}
            for r in ref["rows"] for k, v in r.items() if k.startswith("T")]
    return pd.DataFrame(rows, columns=["task", "method", "T", "length", "status"])


def _panels(curves: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    data = curves.assign(panel=curves["task"] + ", T = " + curves["T"].astype(str))
    return data, list(dict.fromkeys(data.sort_values(["task", "T"])["panel"]))


def rnn_boundary_gradients(runs: pd.DataFrame, curves: pd.DataFrame, tier: str, stem: Path) -> None:
    """At the truncation boundary: norms of the SG's target and of the SG (top), and their cosine (bottom)."""
    title = "RNN: gradients at the truncation boundary vs time step"
    if runs.empty:
        return not_run(stem, title, tier)
    data, panels = _panels(curves)
    palette = rnn_palette(data["method"])
    norms = data.melt(id_vars=["panel", "method", "seed", "timestep"],
                      value_vars=["boundary_target_norm", "boundary_sg_norm"], var_name="gradient",
                      value_name="norm").dropna(subset=["norm"])
    norms["gradient"] = norms["gradient"].map({"boundary_target_norm": "target", "boundary_sg_norm": "synthetic"})
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 6.4), squeeze=False, sharex="col")
    for col, panel in enumerate(panels):
        top, bottom = axes[0][col], axes[1][col]
        sns.lineplot(norms[norms["panel"] == panel], x="timestep", y="norm", hue="method", palette=palette,
                     style="gradient", style_order=["target", "synthetic"], errorbar=t_interval, ax=top)
        top.set_yscale("log")
        top.set_title(panel)
        top.set_ylabel("gradient norm at boundary (L2)")
        cos = data[(data["panel"] == panel)].dropna(subset=["boundary_target_cosine"])
        if cos.empty:
            bottom.text(0.5, 0.5, "no synthetic gradient (BPTT only)", ha="center", transform=bottom.transAxes)
        else:
            sns.lineplot(cos, x="timestep", y="boundary_target_cosine", hue="method", errorbar=t_interval, ax=bottom,
                         palette={m: c for m, c in palette.items() if m in set(cos["method"])})
        bottom.axhline(0, color="0.5", lw=0.8)
        bottom.set_ylabel("cosine(SG, its target)")
        bottom.set_xlabel("stream time steps")
    in_thousands(axes)
    fig.suptitle(f"{title} (tier {tier})", y=1.01)
    fig.tight_layout()
    footnote(fig, *rnn_context(runs, tier), seeds_text(runs, ["task", "method", "T"]), BAND,
             "target: what the SG is regressed towards at a window boundary (bptt: the gradient truncation drops there); "
             "synthetic: the SG there")
    save(fig, stem)


def rnn_curriculum(runs: pd.DataFrame, curves: pd.DataFrame, tier: str, stem: Path) -> None:
    """Curriculum traces: the sequence length being trained vs time step, one line per run."""
    title = "RNN: curriculum length vs time step"
    if runs.empty:
        return not_run(stem, title, tier)
    data, panels = _panels(curves)
    g = sns.relplot(data, x="timestep", y="length", hue="method", palette=rnn_palette(data["method"]),
                    hue_order=ordered(data["method"], RNN_METHODS), units="seed", estimator=None,
                    col="panel", col_order=panels, col_wrap=min(3, len(panels)), kind="line",
                    drawstyle="steps-post", height=2.8, aspect=1.3)
    g.set_axis_labels("stream time steps", "curriculum length (vectors)")
    g.set_titles("{col_name}")
    in_thousands(g.axes)
    for ax in g.axes.flat:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    g.figure.suptitle(f"{title} (tier {tier})", y=1.03)
    footnote(g.figure, *rnn_context(runs, tier), seeds_text(runs, ["task", "method", "T"]),
             "one line per seed")
    save(g.figure, stem)


# ---------------------------------------------------------------- diagnostics (issue #8)


def draw(tier: str, tables: Path, out_dir: Path) -> list[Path]:
    """Every RNN figure from the tables in `tables`; returns the PNG paths."""
    style()
    read, stems = get("rnn").figure_inputs(tables, out_dir, "runs", "curves")
    rnn_length_vs_T(read["runs"], tier, stems["rnn_length_vs_T"])
    rnn_boundary_gradients(read["runs"], read["curves"], tier, stems["rnn_boundary_gradients"])
    rnn_curriculum(read["runs"], read["curves"], tier, stems["rnn_curriculum"])
    return [s.with_suffix(".png") for s in stems.values()]
