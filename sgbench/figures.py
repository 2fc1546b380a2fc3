"""The pipeline's figures, drawn from the tidy tables `sgbench aggregate` writes (PNG and PDF).

Every figure names its tier, seeds per line, data and budget in a footnote, and draws the same
95 % Student-t interval over seeds as the tables. A family not run at a tier still gets its
figure files, saying so, so that every tier has the same outputs.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes or CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import report  # noqa: E402
from .claims import load_reference  # noqa: E402

BAND = "mean over seeds; band or bars: 95 % Student-t interval"


def _style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def save(fig, stem: Path) -> None:
    """stem.png (for the Markdown and HTML reports) and stem.pdf (for papers)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".png", ".pdf"):
        fig.savefig(stem.with_suffix(suffix), dpi=200, bbox_inches="tight")
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
    ax.text(0.5, 0.5, f"{title}\n{report.NOT_RUN} (tier {tier})", ha="center", va="center")
    save(fig, stem)


def ff_context(runs: pd.DataFrame, tier: str) -> list[str]:
    hardware = ", ".join(sorted(set(runs["device"] + " " + runs["hardware"])))
    return [f"tier {tier}", f"data: {', '.join(sorted(runs['dataset'].unique()))}",
            report.budget_text(runs, "iterations", "iterations"), hardware]


def curves_grid(data: pd.DataFrame, y: str, ylabel: str, hue: str, col: str, col_order: list, title: str, tier: str,
                wrap: int = 3, **kw):
    """`y` vs training iterations, one panel per `col` value, one line per `hue` value (mean over seeds with
    its 95 % interval); the titles and axes every curve figure shares. Returns the FacetGrid."""
    g = sns.relplot(data, x="step", y=y, hue=hue, col=col, col_order=col_order, col_wrap=min(wrap, len(col_order)),
                    kind="line", errorbar=report.t_interval, marker="o", markersize=3, height=2.8, **kw)
    g.set_axis_labels("training iterations (steps)", ylabel)
    g.set_titles("{col_name}")
    in_thousands(g.axes)
    g.figure.suptitle(f"{title} (tier {tier})", y=1.03)
    return g


def ff_curves_by_net(runs: pd.DataFrame, curves: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The curves of `runs`, each row labelled with its net ("mnist FCN-3"), and the nets in table order."""
    data = curves.merge(runs[report.FF_CELL + ["method", "update_prob", "seed"]])
    data = data.assign(net=data.apply(report.net_label, axis=1))
    return data, list(dict.fromkeys(data.sort_values(report.FF_CELL)["net"]))


def ff_test_error(runs: pd.DataFrame, curves: pd.DataFrame, tier: str, stem: Path) -> None:
    """Test error vs iterations, one panel per net and depth, one line per method ([DNI] Table 1 runs)."""
    title = "Feed-forward: test error vs iterations"
    runs = report.table1_runs(runs)
    if runs.empty:
        return not_run(stem, title, tier)
    data, nets = ff_curves_by_net(runs, curves)
    g = curves_grid(data, "test_error", "test error (%)", "method", "net", nets, title, tier, wrap=4,
                    hue_order=report.ordered(data["method"], report.TABLE1_METHODS), aspect=1.2,
                    facet_kws={"sharey": False})
    footnote(g.figure, *ff_context(runs, tier), seeds_text(runs, report.FF_CELL + ["method"]), BAND)
    save(g.figure, stem)


def unlock_test_error(runs: pd.DataFrame, curves: pd.DataFrame, tier: str, stem: Path) -> None:
    """Per unlock cell: left, every method at p = 1; right, each method run at p < 1, one line per p."""
    title = "Complete unlock and update probability: test error vs iterations"
    runs = report.unlock_cells(runs)
    if runs.empty:
        return not_run(stem, title, tier)
    data, nets = ff_curves_by_net(runs, curves)
    fig, axes = plt.subplots(len(nets), 2, figsize=(10, 3.2 * len(nets)), squeeze=False)
    for (left, right), net in zip(axes, nets):
        cell = data[data["net"] == net]
        full = cell[cell["update_prob"] == 1.0]
        sns.lineplot(full, x="step", y="test_error", hue="method", errorbar=report.t_interval, ax=left,
                     hue_order=report.ordered(full["method"], report.TABLE1_METHODS + report.UNLOCK_METHODS))
        left.set_title(f"{net}: methods, every layer updated each step")
        async_methods = cell.loc[cell["update_prob"] < 1.0, "method"].unique()
        partial = cell[cell["method"].isin(async_methods)].assign(
            p=lambda d: d["method"] + ", p = " + d["update_prob"].map("{:g}".format))
        if partial.empty:
            right.text(0.5, 0.5, f"no update probability < 1 {report.NOT_RUN}", ha="center", transform=right.transAxes)
        else:
            sns.lineplot(partial, x="step", y="test_error", hue="p", errorbar=report.t_interval, ax=right,
                         hue_order=sorted(partial["p"].unique(), key=lambda s: -float(s.split("= ")[1])))
        right.set_title(f"{net}: layers updated with probability p")
        for ax in (left, right):
            ax.set_xlabel("training iterations (steps)")
            ax.set_ylabel("test error (%)")
    in_thousands(axes)
    fig.suptitle(f"{title} (tier {tier})", y=1.01)
    fig.tight_layout()
    footnote(fig, *ff_context(runs, tier), seeds_text(runs, report.FF_CELL + ["method", "update_prob"]), BAND)
    save(fig, stem)


def rnn_palette(methods) -> dict:
    """One colour per RNN method, the same in every panel and figure."""
    names = list(report.RNN_METHODS) + sorted(set(methods) - set(report.RNN_METHODS))
    colours = dict(zip(names, sns.color_palette(n_colors=len(names))))
    return {m: colours[m] for m in report.ordered(methods, report.RNN_METHODS)}


def rnn_context(runs: pd.DataFrame, tier: str) -> list[str]:
    hardware = ", ".join(sorted(set(runs["device"] + " " + runs["hardware"])))
    return [f"tier {tier}", f"tasks: {', '.join(sorted(runs['task'].unique()))} (generated)",
            report.budget_text(runs, "timesteps", "stream time steps"), hardware]


def rnn_length_vs_T(runs: pd.DataFrame, tier: str, stem: Path) -> None:
    """Largest length solved vs truncation T, per task and method; [DNI]'s (recalled) values hollow."""
    title = "RNN: largest sequence length solved vs truncation window T"
    if runs.empty:
        return not_run(stem, title, tier)
    tasks = sorted(runs["task"].unique())
    methods = report.ordered(runs["method"], report.RNN_METHODS)
    palette = rnn_palette(methods)
    paper = paper_rnn_lengths()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        ours = runs[runs["task"] == task]
        sns.lineplot(ours, x="T", y="largest_length_solved", hue="method", hue_order=methods, palette=palette,
                     errorbar=report.t_interval, err_style="bars", marker="o", ax=ax)
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
    """At the truncation boundary: norms of the true gradient and of the SG (top), and their cosine (bottom)."""
    title = "RNN: gradients at the truncation boundary vs time step"
    if runs.empty:
        return not_run(stem, title, tier)
    data, panels = _panels(curves)
    palette = rnn_palette(data["method"])
    norms = data.melt(id_vars=["panel", "method", "seed", "timestep"],
                      value_vars=["boundary_true_grad_norm", "boundary_sg_norm"], var_name="gradient",
                      value_name="norm").dropna(subset=["norm"])
    norms["gradient"] = norms["gradient"].map({"boundary_true_grad_norm": "true", "boundary_sg_norm": "synthetic"})
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 6.4), squeeze=False, sharex="col")
    for col, panel in enumerate(panels):
        top, bottom = axes[0][col], axes[1][col]
        sns.lineplot(norms[norms["panel"] == panel], x="timestep", y="norm", hue="method", palette=palette,
                     style="gradient", style_order=["true", "synthetic"], errorbar=report.t_interval, ax=top)
        top.set_yscale("log")
        top.set_title(panel)
        top.set_ylabel("gradient norm at boundary (L2)")
        cos = data[(data["panel"] == panel)].dropna(subset=["boundary_cosine"])
        if cos.empty:
            bottom.text(0.5, 0.5, "no synthetic gradient (BPTT only)", ha="center", transform=bottom.transAxes)
        else:
            sns.lineplot(cos, x="timestep", y="boundary_cosine", hue="method", errorbar=report.t_interval, ax=bottom,
                         palette={m: c for m, c in palette.items() if m in set(cos["method"])})
        bottom.axhline(0, color="0.5", lw=0.8)
        bottom.set_ylabel("cosine(SG, true gradient)")
        bottom.set_xlabel("stream time steps")
    in_thousands(axes)
    fig.suptitle(f"{title} (tier {tier})", y=1.01)
    fig.tight_layout()
    footnote(fig, *rnn_context(runs, tier), seeds_text(runs, ["task", "method", "T"]), BAND,
             "true: gradient arriving at the window's last state from the next window; synthetic: the SG applied there")
    save(fig, stem)


def rnn_curriculum(runs: pd.DataFrame, curves: pd.DataFrame, tier: str, stem: Path) -> None:
    """Curriculum traces: the sequence length being trained vs time step, one line per run."""
    title = "RNN: curriculum length vs time step"
    if runs.empty:
        return not_run(stem, title, tier)
    data, panels = _panels(curves)
    g = sns.relplot(data, x="timestep", y="length", hue="method", palette=rnn_palette(data["method"]),
                    hue_order=report.ordered(data["method"], report.RNN_METHODS), units="seed", estimator=None,
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

def _diag_net(df: pd.DataFrame) -> pd.Series:
    return df.apply(report.net_label, axis=1)


def diag_fidelity(runs: pd.DataFrame, fidelity: pd.DataFrame, tier: str, stem: Path) -> None:
    """Cosine(SG, exact gradient) vs step, one line per boundary (by distance from the loss), one panel per
    net / method / placement (warm-up 0, default SG)."""
    from . import diagnostics
    title = "Diagnostics: SG fidelity per boundary vs iterations"
    data = fidelity.merge(diagnostics.placement_runs(runs)[diagnostics.KEYS]) if not fidelity.empty else fidelity
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
    from . import diagnostics
    title = "Diagnostics: DNI placement"
    data = diagnostics.placement_runs(runs)
    if data.empty or data["dni_boundaries"].nunique() < 2:
        return not_run(stem, title, tier)
    data = data.assign(net=_diag_net(data), run=data["method"].where(data["method"] == "backprop",
                                                                       data["method"] + ", " + data["dni_placement"]))
    late = diagnostics.late_fidelity(runs, fidelity)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    sns.lineplot(data, x="dni_boundaries", y="test_error", hue="net", style="method", errorbar=report.t_interval,
                 err_style="bars", marker="o", ax=left)
    left.set_xlabel("number of DNI boundaries (0: backprop)")
    left.set_ylabel("final test error (%)")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    if late.empty:
        right.text(0.5, 0.5, f"no probe {report.NOT_RUN}", ha="center", transform=right.transAxes)
    else:
        late = late.assign(run=_diag_net(late) + ", " + late["method"] + ", " + late["dni_placement"])
        sns.lineplot(late, x="distance", y="cosine", hue="run", errorbar=report.t_interval, err_style="bars",
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
    from . import diagnostics
    title = "Diagnostics: warm-up of exact backprop, then DNI"
    wruns = diagnostics.warmup_runs(runs)
    if wruns.empty or wruns["warmup"].nunique() < 2:
        return not_run(stem, title, tier)
    data = curves.merge(wruns[diagnostics.KEYS])
    data = data.assign(panel=_diag_net(data) + ", " + data["method"], w=data["warmup"].map(lambda w: f"w = {100 * w:g} %"))
    g = curves_grid(data, "test_error", "test error (%)", "w", "panel", sorted(data["panel"].unique()), title, tier,
                    aspect=1.3, facet_kws={"sharey": False})
    footnote(g.figure, *ff_context(wruns, tier), seeds_text(data, ["panel", "w"]), BAND,
             "the first w % of the iterations are exact backprop while the SG models learn from the true gradient")
    save(g.figure, stem)


def diag_sg_cost(runs: pd.DataFrame, tier: str, stem: Path) -> None:
    """Cost (training steps/s) against final test error, one point per SG architecture (mean ± interval)."""
    from . import diagnostics
    title = "Diagnostics: SG model, accuracy vs cost"
    data = diagnostics.sg_runs(runs)
    if data.empty:
        return not_run(stem, title, tier)
    data = data.assign(sg=data.apply(diagnostics.sg_label, axis=1), net=_diag_net(data))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (net, sg), g in data.groupby(["net", "sg"]):
        (x0, x1), (y0, y1) = report.t_interval(g["steps_per_s"]), report.t_interval(g["test_error"])
        x, y = g["steps_per_s"].mean(), g["test_error"].mean()
        ax.errorbar(x, y, xerr=[[x - x0], [x1 - x]], yerr=[[y - y0], [y1 - y]], capsize=3, label=f"{net}: {sg}",
                    fmt="o" if g["method"].iloc[0] == "cdni" else "s")  # circles: label-conditioned SG
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


def parallel_speed(runs: pd.DataFrame, model: pd.DataFrame, tier: str, stem: Path) -> None:
    """Per net: samples/s vs K (ideal: K x single-process backprop), time to target vs K, and the
    speedup over single-process backprop, measured (points) beside the analytic model (lines)."""
    title = "Parallel workers: throughput, time to target, speedup"
    if runs.empty:
        return not_run(stem, title, tier)
    nets = list(dict.fromkeys(runs.sort_values(report.FF_CELL).apply(report.net_label, axis=1)))
    fig, axes = plt.subplots(len(nets), 3, figsize=(13, 3.4 * len(nets)), squeeze=False)
    order = report.ordered(runs["method"], ("backprop", "cdni", "dni"))
    palette = dict(zip(order, sns.color_palette(n_colors=len(order))))
    for row, net in zip(axes, nets):
        data = runs[runs.apply(report.net_label, axis=1) == net]
        for ax, y, label in ((row[0], "samples_per_s", "samples / s"),
                             (row[1], "time_to_target_s", f"s to {data['target_error'].iloc[0]:g} % test error")):
            sns.lineplot(data, x="workers", y=y, hue="method", hue_order=order, palette=palette,
                         errorbar=report.t_interval, err_style="bars", marker="o", ax=ax, legend=ax is row[0])
            ax.set(xlabel="workers K", ylabel=label, title=net)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        single = data[(data["method"] == "backprop") & (data["workers"] == 1)]["samples_per_s"].mean()
        ks = sorted(data["workers"].unique())
        row[0].plot(ks, [k * single for k in ks], ls=":", color="0.4", label="ideal: K × single-process backprop")
        row[0].legend(fontsize=7)
        cell = model[model.apply(report.net_label, axis=1) == net] if not model.empty else model
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
    footnote(fig, f"tier {tier}", report.budget_text(runs, "iterations", "iterations"), hardware,
             f"{int(runs['threads'].max())} thread(s) per worker",
             seeds_text(runs, report.FF_CELL + ["method", "workers"]),
             "backprop at K > 1: locked pipeline", "bars: 95 % Student-t interval; time to target: runs that reached it")
    fig.tight_layout()
    save(fig, stem)


def draw(family: str, tier: str, tables: Path, out_dir: Path) -> list[Path]:
    """Every figure of a family from the tables in `tables`; returns the PNG paths."""
    _style()
    names = report.OUTPUTS[family]
    runs = report.read_table(Path(tables) / names["runs"])
    curves = report.read_table(Path(tables) / names["curves"])
    stems = {name: Path(out_dir) / name for name in report.FIGURES[family]}
    if family == "diagnostics":
        fidelity = report.read_table(Path(tables) / names["fidelity"])
        diag_fidelity(runs, fidelity, tier, stems["diag_fidelity"])
        diag_placement(runs, fidelity, tier, stems["diag_placement"])
        diag_warmup(runs, curves, tier, stems["diag_warmup"])
        diag_sg_cost(runs, tier, stems["diag_sg_cost"])
    elif family == "feedforward":
        ff_test_error(runs, curves, tier, stems["ff_test_error"])
        unlock_test_error(runs, curves, tier, stems["unlock_test_error"])
    elif family == "parallel":
        parallel_speed(runs, report.read_table(Path(tables) / names["model"]), tier, stems["parallel_speed"])
    else:
        rnn_length_vs_T(runs, tier, stems["rnn_length_vs_T"])
        rnn_boundary_gradients(runs, curves, tier, stems["rnn_boundary_gradients"])
        rnn_curriculum(runs, curves, tier, stems["rnn_curriculum"])
    return [s.with_suffix(".png") for s in stems.values()]
