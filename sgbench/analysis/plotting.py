"""Plotting helpers every family's figures share: one style, PNG + PDF written atomically, a footnote
naming tier, seeds, data and budget, and the same 95 % Student-t interval over seeds as the tables.
A family not run at a tier still gets its figure files, saying so."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes or CI

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .. import runtime
from .stats import t_interval
from .tables import NOT_RUN

BAND = "mean over seeds; band or bars: 95 % Student-t interval"


def style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def save(fig, stem: Path) -> None:
    """stem.png (for the Markdown and HTML reports) and stem.pdf (for papers), each written atomically
    with the user's umask (runtime.atomic_write): a killed job never leaves a half-drawn figure."""
    for suffix in (".png", ".pdf"):
        runtime.atomic_write(stem.with_suffix(suffix),
                             lambda f: fig.savefig(f, dpi=200, bbox_inches="tight", format=suffix[1:]))
    plt.close(fig)


def footnote(fig, *parts: str) -> None:
    fig.text(0.01, -0.02, " · ".join(p for p in parts if p), ha="left", va="top", fontsize=8, color="0.3",
             wrap=True)


def in_thousands(axes) -> None:
    """Step counts as 50k, 1.5M: long tick labels collide."""
    def label(x, _):
        return f"{x / 1e6:g}M" if abs(x) >= 1e6 else f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"
    for ax in getattr(axes, "flat", axes):
        ax.xaxis.set_major_formatter(FuncFormatter(label))


def seeds_text(runs: pd.DataFrame, keys: list[str]) -> str:
    counts = runs.groupby(keys)["seed"].nunique()
    low, high = int(counts.min()), int(counts.max())
    return f"n = {low} seed{'s' if high > 1 else ''} per line" if low == high else f"n = {low}–{high} seeds per line"


def not_run(stem: Path, title: str, tier: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}\n{NOT_RUN} (tier {tier})", ha="center", va="center")
    save(fig, stem)


def curves_grid(data: pd.DataFrame, y: str, ylabel: str, hue: str, col: str, col_order: list, title: str, tier: str,
                wrap: int = 3, **kw):
    """`y` vs training iterations, one panel per `col` value, one line per `hue` value (mean over seeds with
    its 95 % interval); the titles and axes every curve figure shares. Returns the FacetGrid."""
    g = sns.relplot(data, x="step", y=y, hue=hue, col=col, col_order=col_order, col_wrap=min(wrap, len(col_order)),
                    kind="line", errorbar=t_interval, marker="o", markersize=3, height=2.8, **kw)
    g.set_axis_labels("training iterations (steps)", ylabel)
    g.set_titles("{col_name}")
    in_thousands(g.axes)
    g.figure.suptitle(f"{title} (tier {tier})", y=1.03)
    return g
