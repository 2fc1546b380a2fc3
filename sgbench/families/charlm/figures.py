"""Char-LM figure: validation bits per character vs time step, per corpus and T, one colour per method."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from ...analysis.plotting import (
    BAND,
    footnote,
    in_thousands,
    not_run,
    save,
    seeds_text,
    style,
)
from ...analysis.stats import ordered, t_interval
from ...analysis.tables import budget_text
from ...catalog import CHARLM_METHODS
from .. import get


def charlm_bpc_vs_steps(runs: pd.DataFrame, curves: pd.DataFrame, tier: str, stem: Path) -> None:
    """Validation bpc vs characters read per stream; one panel per (corpus, T), one line per method."""
    title = "Char-LM: validation bits per character vs time step"
    if runs.empty:
        return not_run(stem, title, tier)
    data = curves.assign(panel=curves["corpus"] + ", T = " + curves["T"].astype(str))
    panels = list(dict.fromkeys(data.sort_values(["corpus", "T"])["panel"]))
    g = sns.relplot(data, x="timestep", y="valid_bpc", hue="method",
                    hue_order=ordered(data["method"], CHARLM_METHODS), col="panel", col_order=panels,
                    col_wrap=min(3, len(panels)), kind="line", errorbar=t_interval, marker="o", markersize=3,
                    height=2.8)
    g.set_axis_labels("characters read per stream (time steps)", "validation bits per character")
    g.set_titles("{col_name}")
    in_thousands(g.axes)
    g.figure.suptitle(f"{title} (tier {tier})", y=1.03)
    hardware = ", ".join(sorted(set(runs["device"] + " " + runs["hardware"])))
    footnote(g.figure, f"tier {tier}", f"corpora: {', '.join(sorted(runs['corpus'].unique()))}",
             budget_text(runs, "timesteps", "characters per stream"), hardware,
             seeds_text(runs, ["corpus", "method", "T"]), BAND)
    save(g.figure, stem)


def draw(tier: str, tables: Path, out_dir: Path) -> list[Path]:
    """Every char-LM figure from the tables in `tables`; returns the PNG paths."""
    style()
    read, stems = get("charlm").figure_inputs(tables, out_dir, "runs", "curves")
    charlm_bpc_vs_steps(read["runs"], read["curves"], tier, stems["charlm_bpc_vs_steps"])
    return [s.with_suffix(".png") for s in stems.values()]
