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
Every number is a mean over seeds with its 95 % t-interval (report.seed_stats). These are
sgbench's own measurements, not claims of [DNI].
"""
from __future__ import annotations

import pandas as pd

from . import report
from .models import paper_sg_hidden_layers

KEYS = ["dataset", "arch", "layers", "method", "dni_placement", "warmup", "sg_hidden_layers", "sg_loss_weight",
        "seed"]
NET = ["dataset", "arch", "layers"]
RUN_COLUMNS = KEYS + ["dni_boundaries", "default_sg", "tier", "iterations", "batch_size", "lr", "test_error",
                      "late_cosine_top", "late_cosine_bottom", "steps_per_s", "train_time_s", "device", "hardware",
                      "threads", "git_commit", "path"]
CURVE_COLUMNS = KEYS + ["step", "test_error", "train_loss"]
# One row per probe of a placed boundary. distance: layers above the boundary (1 = it feeds the head).
FIDELITY_COLUMNS = KEYS + ["step", "boundary", "distance", "cosine", "rel_error", "norm_ratio"]
PLACEMENTS = ("every", "every_second", "middle")


def sg_changes(c: dict) -> dict:
    """What of a (resolved) config's SG model differs from its method's default: {"sgh": hidden layers}
    unless they are the paper's (models.paper_sg_hidden_layers), {"sgw": weight} unless the SG-loss
    weight is 1. Empty for backprop, which has no SG."""
    if c["method"] == "backprop":
        return {}
    changes = {}
    if c.get("sg_hidden_layers") not in (None, paper_sg_hidden_layers(c["arch"], c["method"])):
        changes["sgh"] = int(c["sg_hidden_layers"])
    if float(c.get("sg_loss_weight", 1.0)) != 1.0:
        changes["sgw"] = float(c["sg_loss_weight"])
    return changes


def run_name(c: dict) -> str:
    """A diagnostics run's name in the pipeline, from its resolved config: mnist-fcn6-cdni-seed0 plus only
    what differs from the defaults: -middle (placement), -w0.3 (warm-up), -sgh1 (SG hidden layers),
    -sgw10 (SG-loss weight). Canonical: a default given explicitly (placement every, warm-up 0, the
    paper's SG hidden layers, weight 1) names the same run as one left out, so it is trained once."""
    parts = [f"{c['dataset']}-{c['arch']}{c['layers']}-{c['method']}"]
    if c.get("dni_placement", "every") != "every":
        parts.append(c["dni_placement"])
    if c.get("warmup", 0):
        parts.append(f"w{c['warmup']:g}")
    parts += [f"{key}{value:g}" for key, value in sg_changes(c).items()]
    return "-".join(parts + [f"seed{c['seed']}"])


def run_row(path, m: dict) -> dict:
    c = m["config"]
    row = report.ff_run_row(path, m)
    sg_layers = None if c["method"] == "backprop" else c.get("sg_hidden_layers")
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
        m = report.read_metrics(path, "feedforward", tier)
        row = run_row(path, m)
        curves += report._curve_rows(path, m["curves"], ["step", "test_error", "train_loss"], {k: row[k] for k in KEYS})
        fidelity += fidelity_rows(row, m)
        runs.append(row)
    runs_df = pd.DataFrame(runs, columns=RUN_COLUMNS).sort_values(KEYS, ignore_index=True)
    report.refuse_duplicates(runs_df, KEYS)
    return runs_df, pd.DataFrame(curves, columns=CURVE_COLUMNS), pd.DataFrame(fidelity, columns=FIDELITY_COLUMNS)


# ---------------------------------------------------------------- slices

def placement_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[(runs["warmup"] == 0) & runs["default_sg"].astype(bool)]


def warmup_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[(runs["dni_placement"] == "every") & runs["default_sg"].astype(bool) & (runs["method"] != "backprop")]


def sg_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of the SG-model ablation: placement every, no warm-up, in nets where a non-default SG ran."""
    base = runs[(runs["dni_placement"] == "every") & (runs["warmup"] == 0) & (runs["method"] != "backprop")]
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
    stats = report.group_stats(runs, keys, value)
    return stats.assign(cell=[report.cell_text(s, digits) for _, s in stats.iterrows()])


def placement_table(runs: pd.DataFrame) -> str:
    runs = placement_runs(runs)
    if runs.empty:
        return report.NOT_RUN
    runs = runs.assign(where=[("backprop" if r.method == "backprop" else f"{r.method}, {r.dni_placement}")
                              + f" ({r.dni_boundaries} DNIs)" for r in runs.itertuples()])
    cells = _cells(runs, NET + ["where"], "test_error")
    return cells.pivot(index=NET, columns="where", values="cell").fillna("—").reset_index().to_markdown(index=False)


def fidelity_table(runs: pd.DataFrame, fidelity: pd.DataFrame, value: str = "cosine") -> str:
    late = late_fidelity(runs, fidelity)
    if late.empty:
        return report.NOT_RUN
    late = late.assign(run=late["method"] + ", " + late["dni_placement"])
    cells = _cells(late, NET + ["run", "distance"], value, 3)
    table = cells.pivot(index=NET + ["run"], columns="distance", values="cell").fillna("—")
    table.columns = [f"d = {d}" for d in table.columns]
    return table.reset_index().to_markdown(index=False)


def warmup_table(runs: pd.DataFrame) -> str:
    runs = warmup_runs(runs)
    if runs.empty or runs["warmup"].nunique() < 2:
        return report.NOT_RUN
    cells = _cells(runs, NET + ["method", "warmup"], "test_error")
    table = cells.pivot(index=NET + ["method"], columns="warmup", values="cell").fillna("—")
    table.columns = [f"w = {100 * w:g} %" for w in table.columns]
    return table.reset_index().to_markdown(index=False)


def sg_table(runs: pd.DataFrame) -> str:
    runs = sg_runs(runs)
    if runs.empty:
        return report.NOT_RUN
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
        return title + f"Tier **{tier}**: {report.NOT_RUN}.\n"
    parts = [title + report.context_lines(runs, tier, "iterations", "iterations", ", ".join(sorted(runs["dataset"].unique())))
             + "\nFidelity: per-example gradients over the whole probe batch (see sgbench/probe.py).\n"]
    for key, text in (("placement", placement_table(runs)), ("fidelity", fidelity_table(runs, fidelity)),
                      ("rel_error", fidelity_table(runs, fidelity, "rel_error")), ("warmup", warmup_table(runs)),
                      ("sg", sg_table(runs))):
        parts.append(f"{level}# {TITLES[key]}\n\n{text}\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- findings (the report's D1-D4)

def _stat(values, digits=2) -> str:
    return report.cell_text(report.seed_stats(values), digits)


def _by_net(runs: pd.DataFrame, *keys: str):
    """Groups of runs by net ('mnist FCN-6') and `keys`: ((net, *key values), runs); none if runs is empty."""
    return [] if runs.empty else runs.groupby([runs.apply(report.net_label, axis=1), *keys])


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
                lambda k: f"{k[0]}{'' if k[0] == 'backprop' else ', ' + k[1]} ({k[2]} DNIs)") + ".")
    for (net, method), g in _by_net(warmup_runs(runs), "method"):
        if g["warmup"].nunique() > 1:
            found["D3 warm-up"].append(f"({net}, {method}): final test error " + "; ".join(
                f"w = {100 * w:g} %: {_stat(v['test_error'])}" for w, v in g.groupby("warmup")) + ".")
    keys = ["method", "sg_hidden_layers", "sg_loss_weight"]
    for (net,), g in _by_net(sg_runs(runs)):
        found["D4 SG model cost"].append(f"({net}): " + _error_at_cost(g, keys, lambda k: sg_label(dict(zip(keys, k))))
                                         + ".")
    return [line for name, texts in found.items()
            for line in ([f"- **{name}** {text}" for text in texts] or [f"- **{name}**: {report.NOT_RUN}."])]
