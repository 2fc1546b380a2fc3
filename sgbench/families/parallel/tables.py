"""The parallel family's tables (torch-free): per run, per (net, method, K) with 95 % intervals over
the repetitions (seeds), seconds to each target test error, and the analytic model for K = 1..16
checked against every measured K."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...analysis.stats import seed_stats
from ...analysis.tables import (
    NOT_RUN,
    context_lines,
    curve_rows,
    net_label,
    read_metrics,
    refuse_duplicates,
    run_status,
    write_csv,
    write_text,
)
from .. import get
from .config import LATE_SG, METHODS, method_spec
from .model import MAX_PREDICTED_WORKERS, allreduce_at, balanced_split, predicted_step_s
from ...catalog import baseline

BASELINE = baseline("parallel")  # the method the others are measured against (its catalog row)

CELL = ["dataset", "arch", "layers"]
VARIANT = ["method", "late_sg"]          # a decoupled method's late-SG variant is part of what is compared
KEYS = CELL + VARIANT + ["workers"]
NO_VARIANT = "none"                     # late_sg of the methods without a late SG (a CSV keeps it, unlike "")
RUN_COLUMNS = CELL + VARIANT + ["workers", "seed", "tier", "precision", "status", "iterations", "batch_size",
                                "global_batch",
                                "microbatches", "split", "samples_per_s", "step_ms", "predicted_step_ms",
                                "test_error", "time_to_target", "wait_fraction", "link_latency_ms", "allreduce_ms", "unit_flops",
                                "profile", "unit_cut_ms", "unit_opt_ms", "device", "hardware", "threads", "git_commit", "path"]
CURVE_COLUMNS = CELL + VARIANT + ["workers", "seed", "step", "test_error", "train_loss", "elapsed_s"]
TARGET_COLUMNS = CELL + VARIANT + ["workers", "seed", "target_error", "seconds", "step"]
MODEL_COLUMNS = CELL + VARIANT + ["workers", "split", "predicted_step_ms", "predicted_samples_per_s",
                                  "predicted_speedup", "measured_samples_per_s", "measured_speedup",
                                  "measured_over_predicted"]


def _ms(values) -> str:
    return ",".join(f"{1e3 * v:.4g}" for v in values)


def _floats(text) -> list[float]:
    return [float(v) for v in str(text).split(",")]


def run_row(path, m: dict) -> dict:
    c, t = m["config"], m["timing"]
    waits = [w["wait_s"] / w["train_s"] for w in t["workers"] if w["train_s"] > 0]
    hw = m["meta"]["hardware"]
    return {"dataset": m["dataset"]["variant"], "arch": c["arch"], "layers": c["layers"], "method": c["method"],
            "late_sg": c["late_sg"] if method_spec(c["method"]).protocol == "decoupled" else NO_VARIANT,
            "workers": c["workers"], "seed": c["seed"], "tier": m["tier"], "status": run_status(m),
            "iterations": c["iterations"], "batch_size": c["batch_size"], "global_batch": m["model"]["global_batch"],
            "microbatches": c["microbatches"], "split": ",".join(map(str, m["model"]["split"])),
            "samples_per_s": t["samples_per_s"], "step_ms": 1e3 * t["step_s"],
            "predicted_step_ms": 1e3 * t["predicted_step_s"], "test_error": m["final"]["test_error"],
            "time_to_target": json.dumps([[x["target_error"], x["seconds"], x["step"]] for x in t["time_to_target"]]),
            "wait_fraction": float(np.mean(waits)) if waits else math.nan,
            "link_latency_ms": 1e3 * t["link_latency_s"], "allreduce_ms": 1e3 * t["allreduce_s"],
            "unit_flops": ",".join(f"{v:.6g}" for v in m["model"]["unit_flops"]),
            "profile": json.dumps({str(p["batch"]): p["unit_step_s"] for p in t["profile"]}),
            "unit_cut_ms": _ms(t["unit_cut_s"]), "unit_opt_ms": _ms(t["unit_opt_s"]),
            "device": m["meta"]["device"], "hardware": hw.get("gpu") or hw["cpu"], "threads": c["threads"],
            "git_commit": m["meta"]["git_commit"], "path": str(path)}


def collect(paths, tier: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves) of every metrics file; the same run twice is an error."""
    runs, curves = [], []
    for path in paths:
        m = read_metrics(path, get("parallel").schema, tier)
        row = run_row(path, m)
        keys = {k: row[k] for k in CURVE_COLUMNS[:7]}
        curves += curve_rows(path, m["curves"], CURVE_COLUMNS[7:], keys)
        runs.append(row)
    runs = pd.DataFrame(runs, columns=RUN_COLUMNS)
    refuse_duplicates(runs, CURVE_COLUMNS[:7])
    return runs.sort_values(KEYS + ["seed"], ignore_index=True), pd.DataFrame(curves, columns=CURVE_COLUMNS)


def targets_of(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table of the runs' seconds (and step) to each of their target test errors (NaN: never)."""
    rows = [{k: r[k] for k in TARGET_COLUMNS[:7]} | {"target_error": t, "seconds": s, "step": step}
            for r in runs.to_dict("records") for t, s, step in json.loads(r["time_to_target"])]
    return pd.DataFrame(rows, columns=TARGET_COLUMNS).astype({"seconds": float, "step": float})


def _baseline(frame: pd.DataFrame, cell: tuple) -> pd.DataFrame:
    """Single-process backprop's rows of a cell: what every speed-up and target is measured against."""
    return frame[(frame[CELL] == pd.Series(cell, index=CELL)).all(axis=1)
                 & (frame["method"] == BASELINE) & (frame["workers"] == 1)]


def headline_target(targets: pd.DataFrame, cell: tuple) -> float | None:
    """The lowest target single-process backprop reaches in every repetition at this budget (so that
    'never reached' by another method is a result about it, not about the budget); None if none."""
    base = _baseline(targets, cell)
    reached = [t for t, g in base.groupby("target_error") if g["seconds"].notna().all()]
    return min(reached) if reached else None


def target_stats(targets: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, variant, K, target): repetitions that reached it, and the mean seconds ± 95 %
    interval (inf when some repetition never did); `budget_ok`: backprop K = 1 reaches it in all."""
    cols = KEYS + ["target_error", "n", "reached", "seconds", "seconds_ci95", "budget_ok"]
    if targets.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in targets.groupby(KEYS + ["target_error"], sort=True):
        base = _baseline(targets, key[:3])
        base = base[base["target_error"] == key[-1]]
        s = seed_stats(g["seconds"]) if g["seconds"].notna().all() else {"mean": math.inf, "ci95": math.nan}
        rows.append(dict(zip(KEYS + ["target_error"], key)) | {
            "n": len(g), "reached": int(g["seconds"].notna().sum()), "seconds": s["mean"], "seconds_ci95": s["ci95"],
            "budget_ok": bool(not base.empty and base["seconds"].notna().all())})
    return pd.DataFrame(rows, columns=cols)


def speed_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, variant, K): samples/s and final test error over the repetitions (mean, 95 % interval),
    the speed-up over single-process backprop's mean samples/s (ideal: K), and the seconds to the
    cell's headline target (see headline_target; inf when a repetition never reached it)."""
    cols = KEYS + ["n", "completed", "samples_per_s", "samples_per_s_ci95", "speedup", "ideal", "target_error",
                   "time_to_target_s", "time_to_target_s_ci95", "reached", "test_error", "test_error_ci95",
                   "step_ms", "predicted_step_ms", "wait_fraction"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    rows, targets = [], targets_of(runs)
    for key, g in runs.groupby(KEYS, sort=True):
        cell = key[:3]
        base = _baseline(runs, cell)
        target = headline_target(targets, cell)
        hits = targets[(targets[KEYS] == pd.Series(key, index=KEYS)).all(axis=1) & (targets["target_error"] == target)]
        reached = hits["seconds"].notna()
        tt = seed_stats(hits["seconds"]) if len(hits) and reached.all() else {"mean": math.inf, "ci95": math.nan}
        speed, error = seed_stats(g["samples_per_s"]), seed_stats(g["test_error"])
        rows.append(dict(zip(KEYS, key)) | {
            "n": len(g), "completed": int((g["status"] == "completed").sum()),
            "samples_per_s": speed["mean"], "samples_per_s_ci95": speed["ci95"],
            "speedup": speed["mean"] / base["samples_per_s"].mean() if not base.empty else math.nan,
            "ideal": float(key[-1]), "target_error": target if target is not None else math.nan,
            "time_to_target_s": tt["mean"] if target is not None else math.nan,
            "time_to_target_s_ci95": tt["ci95"] if target is not None else math.nan,
            "reached": f"{int(reached.sum())}/{len(hits)}" if target is not None else "—",
            "test_error": error["mean"], "test_error_ci95": error["ci95"],
            "step_ms": g["step_ms"].mean(), "predicted_step_ms": g["predicted_step_ms"].mean(),
            "wait_fraction": g["wait_fraction"].mean()})
    return pd.DataFrame(rows, columns=cols)


def _profiles(g: pd.DataFrame) -> dict:
    """{batch: per-unit seconds}, averaged over the runs that profiled that batch size."""
    by_batch: dict = {}
    for text in g["profile"]:
        for batch, values in json.loads(text).items():
            by_batch.setdefault(int(batch), []).append(values)
    return {b: list(np.mean(v, axis=0)) for b, v in by_batch.items()}


def model_predictions(runs: pd.DataFrame, max_workers: int = MAX_PREDICTED_WORKERS) -> pd.DataFrame:
    """The analytic model for K = 1..max_workers, per cell and variant: per-unit compute from the
    variant's own runs' profiles, the message latency and the all-reduce time measured by the cell's
    K >= 2 runs (the all-reduce rescaled to K as a ring's), stages cut as the runner cuts them (stage
    methods stop at K = units). Beside it, the measured samples/s where a run exists and the ratio
    measured / predicted: the check of the model at every measured K. Workers are assumed to have a
    core (or GPU) each."""
    rows = []
    for cell, g in runs.groupby(CELL, sort=True):
        multi = g[g["workers"] > 1]
        latency = multi["link_latency_ms"][multi["link_latency_ms"] > 0].mean() / 1e3 if not multi.empty else 0.0
        latency = 0.0 if math.isnan(latency) else latency
        ddp = multi[multi["allreduce_ms"] > 0]
        allreduce_k = (ddp["allreduce_ms"].mean() / 1e3, int(ddp["workers"].iloc[0])) if not ddp.empty else (0.0, 2)
        base_runs = _baseline(g, cell)
        for (method, late_sg), gm in g.groupby(VARIANT, sort=True):
            spec = METHODS[method]
            profiles, cut_s = _profiles(gm), list(np.mean([_floats(v) for v in gm["unit_cut_ms"]], axis=0) / 1e3)
            opt_s = list(np.mean([_floats(v) for v in gm["unit_opt_ms"]], axis=0) / 1e3)
            flops = _floats(gm["unit_flops"].iloc[0])
            batch, micro = int(gm["batch_size"].iloc[0]), int(gm["microbatches"].iloc[0])
            global_of = (lambda k: batch * k) if (spec.protocol == "data_parallel" and spec.batch == "keep") else (lambda k: batch)
            kmax = max_workers if spec.protocol == "data_parallel" else len(flops)
            single = _single_step(g, cell, latency)
            for k in range(1, kmax + 1):
                split = [len(flops)] if spec.protocol == "data_parallel" else balanced_split(flops, k)
                step = predicted_step_s(method, profiles, cut_s, split, batch, latency,
                                        allreduce_at(*allreduce_k, k), micro, k, opt_s)
                measured = gm[gm["workers"] == k]["samples_per_s"].mean()
                predicted_rate = global_of(k) / step
                rows.append(dict(zip(CELL, cell)) | {
                    "method": method, "late_sg": late_sg, "workers": k, "split": ",".join(map(str, split)),
                    "predicted_step_ms": 1e3 * step, "predicted_samples_per_s": predicted_rate,
                    "predicted_speedup": predicted_rate / single if single else math.nan,
                    "measured_samples_per_s": measured,
                    "measured_speedup": measured / base_runs["samples_per_s"].mean() if not base_runs.empty else math.nan,
                    "measured_over_predicted": measured / predicted_rate if not math.isnan(measured) else math.nan})
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def _single_step(g: pd.DataFrame, cell: tuple, latency: float) -> float:
    """Predicted samples/s of single-process backprop in this cell (the model's own baseline)."""
    base = g[(g["method"] == BASELINE)]
    if base.empty:
        return math.nan
    flops = _floats(base["unit_flops"].iloc[0])
    batch = int(base["batch_size"].iloc[0])
    step = predicted_step_s(BASELINE, _profiles(base), [0.0] * len(flops), [len(flops)], batch, latency)
    return batch / step


def _pm(mean, half, digits=0) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if math.isinf(mean):
        return "not reached"
    return f"{mean:,.{digits}f}" + ("" if pd.isna(half) else f" ± {half:,.{digits}f}")


def variant_label(method: str, late_sg) -> str:
    return f"{method} ({late_sg})" if late_sg in LATE_SG else method


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(METHODS)}
    return frame.sort_values(VARIANT + ["workers"], key=lambda c: c.map(order) if c.name == "method" else c)


def markdown(runs: pd.DataFrame, stats: pd.DataFrame, tstats: pd.DataFrame, model: pd.DataFrame, tier: str) -> str:
    title = "# Parallel workers: throughput, seconds to target errors, final error\n\n"
    if runs.empty:
        return title + f"Tier **{tier}**: {NOT_RUN}.\n"
    lines = [title + context_lines(runs, tier, "iterations", "iterations",
                                            ", ".join(sorted(runs["dataset"].unique()))),
             "\nK workers = K processes (torch.distributed), each with the thread count shown. Methods: "
             + "; ".join(f"**{name}**: {spec.words}" for name, spec in METHODS.items())
             + ". Speed-up: mean samples/s over single-process backprop's (ideal: K). Seconds to a target: "
             "training seconds (evaluation off the clock) until the test error first reaches it; 'not reached' "
             "when a repetition never did. Targets count only where single-process backprop reaches them in every "
             "repetition at this budget. Wait: the share of a worker's time blocked on a neighbour. Model: the "
             "analytic step time (sgbench/families/parallel/model.py).\n"]
    for cell, g in stats.groupby(CELL, sort=True):
        lines += [f"\n## {net_label(dict(zip(CELL, cell)))}\n",
                  "| method | K | n | samples/s | speed-up (ideal) | final test error (%) | step ms: measured / model "
                  "| wait | diverged |",
                  "| --- | ---: | ---: | --- | --- | --- | --- | ---: | ---: |"]
        for r in _ordered(g).itertuples():
            lines.append(f"| {variant_label(r.method, r.late_sg)} | {r.workers} | {r.n} | "
                         f"{_pm(r.samples_per_s, r.samples_per_s_ci95)} | {r.speedup:.2f} ({r.ideal:g}) | "
                         f"{_pm(r.test_error, r.test_error_ci95, 2)} | {r.step_ms:.2f} / {r.predicted_step_ms:.2f} | "
                         f"{r.wait_fraction:.0%} | {r.n - r.completed} |")
        tg = tstats[(tstats[CELL] == pd.Series(cell, index=CELL)).all(axis=1)]
        ok = sorted(tg[tg["budget_ok"]]["target_error"].unique(), reverse=True)
        skipped = sorted(set(tg["target_error"]) - set(ok), reverse=True)
        if ok:
            lines += ["", "Seconds to each target test error (reached / repetitions):", "",
                      "| method | K | " + " | ".join(f"≤ {t:g} %" for t in ok) + " |",
                      "| --- | ---: | " + " | ".join("---" for _ in ok) + " |"]
            for (method, late_sg, k), gk in _ordered(tg).groupby(VARIANT + ["workers"], sort=False):
                cells = []
                for t in ok:
                    r = gk[gk["target_error"] == t]
                    cells.append("—" if r.empty else f"{_pm(r['seconds'].iloc[0], r['seconds_ci95'].iloc[0], 2)} "
                                                      f"({int(r['reached'].iloc[0])}/{int(r['n'].iloc[0])})")
                lines.append(f"| {variant_label(method, late_sg)} | {k} | " + " | ".join(cells) + " |")
        if skipped:
            lines.append(f"\nTargets single-process backprop does not reach in every repetition at this budget "
                         f"(left out): {', '.join(f'{t:g} %' for t in skipped)}.")
    if not model.empty:
        lines += ["\n## The analytic model, K = 1 to 16\n",
                  "Predicted samples/s (measured / predicted where a run exists). Per-unit compute from each "
                  "method's own profiles (linear in the batch between the profiled sizes), the message latency and "
                  "all-reduce time from the K ≥ 2 runs (the all-reduce rescaled as a ring's); one core (or GPU) per "
                  "worker assumed; '—': the net has fewer units than K stages.\n"]
        table = model.assign(cell=model.apply(net_label, axis=1),
                             variant=[variant_label(m, s) for m, s in zip(model["method"], model["late_sg"])],
                             value=[f"{p:,.0f}" + ("" if pd.isna(r) else f" ({r:.2f})")
                                    for p, r in zip(model["predicted_samples_per_s"], model["measured_over_predicted"])])
        pivot = table.pivot(index=["cell", "variant"], columns="workers", values="value").fillna("—")
        pivot.columns = [f"K = {k}" for k in pivot.columns]
        lines.append(pivot.reset_index().to_markdown(index=False))
    return "\n".join(lines) + "\n"


def tables(paths, tier: str) -> dict:
    """What the family's aggregation writes, by output key: DataFrames (CSV) and Markdown."""
    runs, curves = collect(paths, tier)
    targets = targets_of(runs)
    stats, tstats, model = speed_stats(runs), target_stats(targets), model_predictions(runs)
    return {"runs": runs, "curves": curves, "targets": targets, "csv": stats, "targets_csv": tstats,
            "model": model, "md": markdown(runs, stats, tstats, model, tier)}


def aggregate(paths, tier: str, out_dir) -> pd.DataFrame:
    """Write every parallel table into out_dir (names: the registry's outputs); returns the runs table."""
    outputs = get("parallel").outputs
    written = tables(paths, tier)
    for key, value in written.items():
        (write_text if isinstance(value, str) else write_csv)(Path(out_dir) / outputs[key], value)
    return written["runs"]
