"""Why DNI works or fails (issue #8): the `diagnostics` family's tables and findings.

Its runs are feed-forward runs (sgbench train-ff) that vary what the Table 1 grid keeps fixed:
where the DNIs sit (`dni_placement`), a warm-up of exact backprop (`warmup`), the SG model
(`sg_hidden_layers`, label conditioning = cdni vs dni, `sg_loss_weight`), most with the fidelity
probe on (`probe_every`). Backprop runs in the family are the 0-DNI reference.

Four ablations, each a slice of the runs (the others at their defaults: placement every, warm-up 0,
the paper's SG for the method, SG-loss weight 1):
  placement  final test error vs where / how many DNIs (warm-up 0, default SG);
  fidelity   the probe's cosine / relative error per boundary vs its distance from the loss;
  warm-up    final test error vs w (placement every, default SG);
  SG model   final test error and steps/s per SG architecture (placement every, warm-up 0).
Every number is a mean over seeds with its 95 % t-interval (seed_stats). These are
sgbench's own measurements, not claims of [DNI].
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...analysis.stats import cell_text, group_stats, seed_stats
from ...analysis.tables import (
    NOT_RUN,
    context_lines,
    curve_rows,
    net_label,
    read_metrics,
    read_table,
    refuse_duplicates,
    write_csv,
    write_text,
)
from .. import get
from ..feedforward.tables import run_row as ff_run_row
from .config import sg_changes
from ...catalog import baseline

BASELINE = baseline("feedforward")  # the method the others are measured against (its catalog row)

KEYS = ["dataset", "arch", "layers", "method", "dni_placement", "warmup", "sg_hidden_layers", "sg_loss_weight",
        "seed"]
NET = ["dataset", "arch", "layers"]
RUN_COLUMNS = KEYS + ["dni_boundaries", "default_sg", "tier", "precision", "adam", "iterations", "batch_size", "lr", "status",
                      "test_error",
                      "val_error", "late_drop",
                      "late_cosine_top", "late_cosine_bottom", "steps_per_s", "train_time_s", "device", "hardware",
                      "threads", "git_commit", "path"]
CURVE_COLUMNS = KEYS + ["step", "test_error", "train_loss"]
# One row per probe of a placed boundary. distance: layers above the boundary (1 = it feeds the head).
FIDELITY_COLUMNS = KEYS + ["step", "boundary", "distance", "cosine", "rel_error", "norm_ratio"]
OUTPUTS = get("diagnostics").outputs  # file names: the registry (sgbench/families/__init__.py)


def run_row(path, m: dict) -> dict:
    c = m["config"]
    row = ff_run_row(path, m)
    sg_layers = None if c["method"] == BASELINE else c.get("sg_hidden_layers")
    default_sg = not sg_changes(c)
    late = {"late_cosine_top": None, "late_cosine_bottom": None}
    cos = m["curves"].get("probe_cosine")
    if cos:
        placed = [i for i, values in enumerate(cos) if values and values[-1] is not None]
        if placed:
            late = {"late_cosine_top": cos[placed[-1]][-1], "late_cosine_bottom": cos[placed[0]][-1]}
    return row | {"dni_placement": c.get("dni_placement", "every"), "warmup": float(c.get("warmup", 0.0)),
                  "sg_hidden_layers": -1 if sg_layers is None else int(sg_layers),  # -1: no SG (backprop)
                  "sg_loss_weight": float(c.get("sg_loss_weight", 1.0)),
                  "dni_boundaries": m["model"].get("dni_boundaries", m["model"]["boundaries"]),
                  "default_sg": default_sg} | late


def fidelity_rows(row: dict, m: dict) -> list[dict]:
    c, keys = m["curves"], {k: row[k] for k in KEYS}
    rows = []
    for b, cosines in enumerate(c.get("probe_cosine", [])):
        for j, step in enumerate(c["probe_step"]):
            if cosines[j] is not None:
                rows.append(keys | {"step": step, "boundary": b, "distance": row["layers"] - b, "cosine": cosines[j],
                                    "rel_error": c["probe_rel_error"][b][j], "norm_ratio": c["probe_norm_ratio"][b][j]})
    return rows


def collect(paths, tier: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, curves, fidelity) of a set of diagnostics metrics.json files."""
    runs, curves, fidelity = [], [], []
    for path in paths:
        m = read_metrics(path, get("diagnostics").schema, tier)
        row = run_row(path, m)
        curves += curve_rows(path, m["curves"], ["step", "test_error", "train_loss"], {k: row[k] for k in KEYS})
        fidelity += fidelity_rows(row, m)
        runs.append(row)
    runs_df = pd.DataFrame(runs, columns=RUN_COLUMNS).sort_values(KEYS, ignore_index=True)
    refuse_duplicates(runs_df, KEYS)
    return runs_df, pd.DataFrame(curves, columns=CURVE_COLUMNS), pd.DataFrame(fidelity, columns=FIDELITY_COLUMNS)


# ---------------------------------------------------------------- slices

def placement_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[(runs["warmup"] == 0) & runs["default_sg"].astype(bool)]


def warmup_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[(runs["dni_placement"] == "every") & runs["default_sg"].astype(bool) & (runs["method"] != BASELINE)]


def sg_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of the SG-model ablation: placement every, no warm-up, in nets where a non-default SG ran."""
    base = runs[(runs["dni_placement"] == "every") & (runs["warmup"] == 0) & (runs["method"] != BASELINE)]
    nets = base.loc[~base["default_sg"].astype(bool), NET].drop_duplicates()
    return base.merge(nets, on=NET)


def late_fidelity(runs: pd.DataFrame, fidelity: pd.DataFrame) -> pd.DataFrame:
    """The last probe of each run and boundary (warm-up 0, default SG), one row per run and boundary."""
    if fidelity.empty:
        return fidelity
    last = fidelity[fidelity["step"] == fidelity.groupby(KEYS)["step"].transform("max")]
    return last.merge(placement_runs(runs)[KEYS], on=KEYS)


def sg_label(row) -> str:
    weight = "" if row["sg_loss_weight"] == 1 else f", SG-loss weight {row['sg_loss_weight']:g}"
    return f"{row['method']}, {int(row['sg_hidden_layers'])} hidden{weight}"


# ---------------------------------------------------------------- tables

def _cells(runs: pd.DataFrame, keys: list[str], value: str, digits: int = 2) -> pd.DataFrame:
    stats = group_stats(runs, keys, value)
    return stats.assign(cell=[cell_text(s, digits) for _, s in stats.iterrows()])


def placement_table(runs: pd.DataFrame) -> str:
    runs = placement_runs(runs)
    if runs.empty:
        return NOT_RUN
    runs = runs.assign(where=[(BASELINE if r.method == BASELINE else f"{r.method}, {r.dni_placement}")
                              + f" ({r.dni_boundaries} DNIs)" for r in runs.itertuples()])
    cells = _cells(runs, NET + ["where"], "test_error")
    return cells.pivot(index=NET, columns="where", values="cell").fillna("—").reset_index().to_markdown(index=False)


def fidelity_table(runs: pd.DataFrame, fidelity: pd.DataFrame, value: str = "cosine") -> str:
    late = late_fidelity(runs, fidelity)
    if late.empty:
        return NOT_RUN
    late = late.assign(run=late["method"] + ", " + late["dni_placement"])
    cells = _cells(late, NET + ["run", "distance"], value, 3)
    table = cells.pivot(index=NET + ["run"], columns="distance", values="cell").fillna("—")
    table.columns = [f"d = {d}" for d in table.columns]
    return table.reset_index().to_markdown(index=False)


def warmup_table(runs: pd.DataFrame) -> str:
    runs = warmup_runs(runs)
    if runs.empty or runs["warmup"].nunique() < 2:
        return NOT_RUN
    cells = _cells(runs, NET + ["method", "warmup"], "test_error")
    table = cells.pivot(index=NET + ["method"], columns="warmup", values="cell").fillna("—")
    table.columns = [f"w = {100 * w:g} %" for w in table.columns]
    return table.reset_index().to_markdown(index=False)


def sg_table(runs: pd.DataFrame) -> str:
    runs = sg_runs(runs)
    if runs.empty:
        return NOT_RUN
    keys = NET + ["method", "sg_hidden_layers", "sg_loss_weight"]
    err, speed = _cells(runs, keys, "test_error"), _cells(runs, keys, "steps_per_s", 1)
    table = err[keys].assign(test_error=err["cell"], steps_per_s=speed["cell"])
    return table.to_markdown(index=False)


TITLES = {"placement": "Placement: final test error (%) by where the DNIs sit (warm-up 0, default SG)",
          "fidelity": "Fidelity at the last probe: cosine(SG, exact gradient) by distance d of the boundary from the "
                      "loss (d = 1: the boundary feeding the head)",
          "rel_error": "Fidelity at the last probe: relative L2 error |SG − exact| / |exact| by distance d",
          "warmup": "Warm-up: final test error (%) after w % of the iterations as exact backprop (placement every)",
          "sg": "SG model: final test error (%) and cost (training steps/s) per SG architecture (placement every, "
                "warm-up 0)"}


def markdown(runs: pd.DataFrame, fidelity: pd.DataFrame, tier: str, level: str = "#") -> str:
    """The four ablation tables, each with its context (or 'not run at this tier')."""
    title = f"{level} Diagnostics: why DNI works or fails (sgbench's own measurements)\n\n"
    if runs.empty:
        return title + f"Tier **{tier}**: {NOT_RUN}.\n"
    parts = [title + context_lines(runs, tier, "iterations", "iterations", ", ".join(sorted(runs["dataset"].unique())))
             + "\nFidelity: per-example gradients over the whole probe batch (see sgbench/probe.py).\n"]
    for key, text in (("placement", placement_table(runs)), ("fidelity", fidelity_table(runs, fidelity)),
                      ("rel_error", fidelity_table(runs, fidelity, "rel_error")), ("warmup", warmup_table(runs)),
                      ("sg", sg_table(runs))):
        parts.append(f"{level}# {TITLES[key]}\n\n{text}\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- findings (the report's D1-D4)

def _stat(values, digits=2) -> str:
    return cell_text(seed_stats(values), digits)


def _by_net(runs: pd.DataFrame, *keys: str):
    """Groups of runs by net ('mnist FCN-6') and `keys`: ((net, *key values), runs); none if runs is empty."""
    return [] if runs.empty else runs.groupby([runs.apply(net_label, axis=1), *keys])


def _error_at_cost(runs: pd.DataFrame, keys: list[str], label) -> str:
    """'<label(key values)>: error % at steps/s' per group of runs, joined."""
    return "; ".join(f"{label(k)}: {_stat(g['test_error'])} % at {_stat(g['steps_per_s'], 1)} steps/s"
                     for k, g in runs.groupby(keys))


def findings(runs: pd.DataFrame, fidelity: pd.DataFrame) -> list[str]:
    """One measured sentence per ablation and net, with seeds and intervals; 'not run' where absent."""
    found = {"D1 fidelity vs depth": [], "D2 placement": [], "D3 warm-up": [], "D4 SG model cost": []}
    late = late_fidelity(runs, fidelity)
    for (net, method), g in _by_net(late[late["dni_placement"] == "every"] if not late.empty else late, "method"):
        top, bottom = g[g["distance"] == g["distance"].min()], g[g["distance"] == g["distance"].max()]
        found["D1 fidelity vs depth"].append(
            f"({net}, {method}, DNI at every boundary): late cosine(SG, exact) {_stat(top['cosine'], 3)} at the "
            f"boundary feeding the head vs {_stat(bottom['cosine'], 3)} at the lowest (d = "
            f"{int(bottom['distance'].max())}); relative error {_stat(top['rel_error'], 3)} vs "
            f"{_stat(bottom['rel_error'], 3)}.")
    for (net,), g in _by_net(placement_runs(runs)):
        if g["dni_boundaries"].nunique() > 1:
            found["D2 placement"].append(f"({net}): final test error and cost " + _error_at_cost(
                g, ["method", "dni_placement", "dni_boundaries"],
                lambda k: f"{k[0]}{'' if k[0] == BASELINE else ', ' + k[1]} ({k[2]} DNIs)") + ".")
    for (net, method), g in _by_net(warmup_runs(runs), "method"):
        if g["warmup"].nunique() > 1:
            found["D3 warm-up"].append(f"({net}, {method}): final test error " + "; ".join(
                f"w = {100 * w:g} %: {_stat(v['test_error'])}" for w, v in g.groupby("warmup")) + ".")
    keys = ["method", "sg_hidden_layers", "sg_loss_weight"]
    for (net,), g in _by_net(sg_runs(runs)):
        found["D4 SG model cost"].append(f"({net}): " + _error_at_cost(g, keys, lambda k: sg_label(dict(zip(keys, k))))
                                         + ".")
    return [line for name, texts in found.items()
            for line in ([f"- **{name}** {text}" for text in texts] or [f"- **{name}**: {NOT_RUN}."])]


def aggregate(paths, tier: str, out_dir: Path) -> pd.DataFrame:
    """Write every diagnostics table into out_dir (names in OUTPUTS); returns the runs table."""
    out = {k: Path(out_dir) / v for k, v in OUTPUTS.items()}
    runs, curves, fidelity = collect(paths, tier)
    for key, df in (("runs", runs), ("curves", curves), ("fidelity", fidelity)):
        write_csv(out[key], df)
    write_text(out["md"], markdown(runs, fidelity, tier))
    return runs


def report_section(tier: str, tables: Path) -> list[str]:
    """REPORT.md's diagnostics section: sgbench's own measured findings (not [DNI]'s claims), each with
    seeds and intervals."""
    lines = ["## Diagnostics: why DNI works or fails (sgbench's own measurements)\n",
             "These are findings of sgbench's own runs, not claims of [DNI], and get no verdict. D1: how well the "
             "synthetic gradient matches the exact one (probe: cosine and relative L2 error over a fixed probe batch, "
             "sgbench/fidelity.py) at the boundary feeding the head vs the lowest one; D2: final test error by where "
             "the DNIs sit ([Czarnecki et al. 2017]'s single DNI in the middle vs every / every second boundary); D3: "
             "final test error after w % of the iterations as exact backprop; D4: final test error and training "
             "steps/s per SG model.\n"]
    paths = {k: Path(tables) / OUTPUTS[k] for k in ("runs", "fidelity")}
    runs = read_table(paths["runs"]) if paths["runs"].exists() else pd.DataFrame()
    if runs.empty:
        return lines + [f"Tier **{tier}**: {NOT_RUN}.\n"]
    lines.append(context_lines(runs, tier, "iterations", "iterations", ", ".join(sorted(runs["dataset"].unique())))
                 + "\n")
    return lines + findings(runs, read_table(paths["fidelity"])) + [""]
