"""bf16 against fp32 (or the fused Adam against the for-loop one) on a tier's own cells (issue #26):
does the change move a result?

    python benchmarks/precision_parity.py --runs results/runs --tier quick --out results/precision-parity
    python benchmarks/precision_parity.py --runs results/reference/quick/runs --tier quick \\
        --out results/reference/precision-parity --jobs 2
    python benchmarks/precision_parity.py --change adam=fused --base-here --runs results/reference/quick/runs \\
        --tier quick --out results/reference/adam-parity --jobs 2

For every fp32 run of the tier in the cells that matter for precision -- the MNIST FCN-3 / FCN-6
backprop, DNI and cDNI runs (every layer updated, DNIs at every boundary, no warm-up) and the copy
task's BPTT and DNI runs -- it trains the same config (same seed, learning rate and budget) with
`precision: bf16` into --out/runs/ (finished runs are reused, so a killed call resumes), then pairs
the two precisions seed by seed. It prints and writes (--out/parity.md, parity.csv) per cell: the
fp32 and bf16 means over seeds, the paired difference bf16 - fp32 of the final test error (copy: the
largest length solved) with its 95 % t-interval, whether the bf16 mean lies outside the fp32 cell's
own 95 % interval (the one the tier's tables print), and the ratio of seconds per step fp32 / bf16
(from each run's own timing, so a load change between the two sets falls on that ratio; the
interleaved step benchmark, benchmarks/ff_speed.py, is the steadier speed figure).

The fp32 side is the tier's runs as they are: run this on the machine and commit that made them, or
give --base-here, which trains the base side too, on this machine, into --out/runs/ (the tier's runs
then only say which configs to pair). --change adam=fused pairs the fused Adam with the for-loop one
(sgbench.fast.make_optimizer) instead: the feed-forward cells only (the RNN has no adam setting).
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import sys
from pathlib import Path

import pandas as pd

from sgbench import families, runtime
from sgbench.config import adam_tag, precision_tag
from sgbench.analysis.stats import difference, seed_stats

FF_METHODS = ("backprop", "dni", "cdni")
COPY_METHODS = ("bptt", "dni")
CHANGES = {"precision": ("fp32", ("bf16",)), "adam": ("for-loop", ("fused",))}  # key: (base value, changes)
TAGS = {"precision": precision_tag, "adam": adam_tag}  # a run name's part for each (the pipeline's names)


def wanted(family: str, cfg: dict, key: str = "precision") -> bool:
    """The cells the parity check covers (the issue's list), nothing else of the tier: runs at the base
    value of `key` (and at fp32 when the change is Adam's)."""
    if cfg.get(key, CHANGES[key][0]) != CHANGES[key][0] or cfg.get("precision", "fp32") != "fp32":
        return False
    if key == "adam" and family != "feedforward":
        return False
    if family == "feedforward":
        return (cfg["dataset"] == "mnist" and cfg["arch"] == "fcn" and cfg["layers"] in (3, 6)
                and cfg["method"] in FF_METHODS and cfg.get("update_prob", 1.0) == 1.0
                and cfg.get("dni_placement", "every") == "every" and not cfg.get("warmup"))
    return family == "rnn" and cfg["task"] == "copy" and cfg["method"] in COPY_METHODS


def find_runs(runs: Path, tier: str, key: str = "precision") -> list[tuple[str, Path, dict]]:
    out = []
    for family in ("feedforward", "rnn"):
        for path in sorted((runs / family / tier).glob("*/metrics.json")):
            m = json.loads(path.read_text())
            if wanted(family, m["config"], key):
                out.append((family, path, m))
    if not out:
        raise SystemExit(f"no fp32 feedforward / copy runs of tier {tier!r} under {runs} "
                         f"(expected {runs}/feedforward/{tier}/<run>/metrics.json)")
    return out


def train(job: tuple[str, dict, str]) -> str:
    """Train one run of the pair in this (worker) process, one torch thread, with the family's own config
    and runner (as `sgbench train-<family>` does)."""
    name, cfg, out_dir = job
    import torch
    torch.set_num_threads(1)
    family = families.get(name)
    family.train(family.config_class().from_dict(cfg), Path(out_dir))
    return out_dir


def cell_key(family: str, cfg: dict) -> tuple:
    return (("mnist", f"FCN-{cfg['layers']}") if family == "feedforward" else ("copy", f"T={cfg['T']}")) + (
        cfg["method"],)


def metric(family: str, m: dict) -> float:
    final = m.get("final", {})
    value = final.get("test_error") if family == "feedforward" else final.get("largest_length_solved")
    return math.nan if value is None else float(value)


def step_s(family: str, m: dict) -> float:
    t = m.get("timing", {})
    if family == "feedforward":
        return 1.0 / t["steps_per_s"] if t.get("steps_per_s") else math.nan
    return t.get("step_s") or math.nan


def parity_table(pairs: list[dict], base: str = "fp32", changed: str = "bf16") -> pd.DataFrame:
    """Per cell: both sides' means, the paired difference changed - base with its 95 % interval, whether the
    changed mean leaves the base cell's interval, the speed-up. Columns keep the names fp32 / bf16 whatever
    the change (the committed precision-parity files use them): fp32 = the base side, bf16 = the changed."""
    rows = []
    df = pd.DataFrame(pairs).rename(columns={base: "fp32", changed: "bf16", f"{base}_step_s": "fp32_step_s",
                                             f"{changed}_step_s": "bf16_step_s"})
    for key, g in df.groupby(["task", "net", "method"], sort=False):
        g = g.set_index("seed")
        f32, b16 = seed_stats(g["fp32"]), seed_stats(g["bf16"])
        d = difference(g["bf16"], g["fp32"])
        low, high = d.interval()
        outside = (f32["n"] >= 2 and not math.isnan(f32["ci95"])
                   and not f32["ci95_low"] <= b16["mean"] <= f32["ci95_high"])
        rows.append(dict(task=key[0], net=key[1], method=key[2], metric=g["metric"].iloc[0], seeds=len(g),
                         fp32_mean=f32["mean"], fp32_ci95=f32["ci95"], bf16_mean=b16["mean"],
                         diff=d.mean, diff_low=low, diff_high=high,
                         bf16_outside_fp32_interval=bool(outside),
                         speedup=float((g["fp32_step_s"] / g["bf16_step_s"]).median()),
                         diverged=int((g["status"] != "completed").sum())))
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, tier: str, runs: Path, base: str = "fp32", changed: str = "bf16") -> str:
    lines = [f"# {changed} against {base}, tier `{tier}` ({base} runs: `{runs}`)", "",
             f"Paired by seed; diff = {changed} - {base} with its 95 % t-interval over the seeds (feed-forward: "
             f"final test error, %; copy: largest length solved). `outside` = the {changed} mean lies outside the "
             f"{base} cell's 95 % interval. speed-up = median over seeds of {base} / {changed} seconds per step.", "",
             f"| task | net | method | metric | seeds | {base} | {changed} | diff [95 % CI] | outside | speed-up | "
             "non-completed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        ci = "" if math.isnan(r.diff_low) else f" [{r.diff_low:+.2f}, {r.diff_high:+.2f}]"
        f32 = f"{r.fp32_mean:.2f}" + ("" if math.isnan(r.fp32_ci95) else f" ± {r.fp32_ci95:.2f}")
        lines.append(f"| {r.task} | {r.net} | {r.method} | {r.metric} | {r.seeds} | {f32} | {r.bf16_mean:.2f} | "
                     f"{r.diff:+.2f}{ci} | {'**yes**' if r.bf16_outside_fp32_interval else 'no'} | "
                     f"{r.speedup:.2f}x | {r.diverged} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, required=True, help="a tier's runs folder: <runs>/<family>/<tier>/<run>/")
    p.add_argument("--tier", default="quick")
    p.add_argument("--out", type=Path, required=True, help="the partner runs go to OUT/runs/, the table to OUT/parity.*")
    p.add_argument("--change", default="precision=bf16", help="KEY=VALUE: precision=bf16 (default) or adam=fused")
    p.add_argument("--base-here", action="store_true", help="train the base side too, on this machine, into OUT/runs/")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (one process and thread each)")
    p.add_argument("--data-root", default=os.environ.get("SGBENCH_DATA"))
    a = p.parse_args(argv)
    key, _, changed = a.change.partition("=")
    if key not in CHANGES or changed not in CHANGES[key][1]:
        p.error(f"--change {a.change!r}: choose one of "
                + ", ".join(f"{k}={v}" for k, (_, vs) in CHANGES.items() for v in vs))
    base = CHANGES[key][0]
    found = find_runs(a.runs, a.tier, key)
    jobs, partners = [], []
    for family, path, m in found:
        cfg = {**m["config"], "data_root": a.data_root} if family == "feedforward" else dict(m["config"])
        sides = {}
        for value in ([base] if a.base_here else []) + [changed]:
            out_dir = a.out / "runs" / family / f"{path.parent.name}{TAGS[key]({key: value})}"
            sides[value] = out_dir
            if not (out_dir / "metrics.json").exists():
                jobs.append((family, {**cfg, key: value}, str(out_dir)))
        partners.append((family, m, sides))
    jobs.sort(key=lambda job: (job[1]["method"] != "dni", -job[1].get("layers", 0)))  # longest first: less idle at the end
    print(f"{len(found)} {base} runs; {len(jobs)} runs to train ({len(found) * (1 + a.base_here) - len(jobs)} "
          "finished)", flush=True)
    with mp.get_context("spawn").Pool(max(1, a.jobs)) as pool:
        for i, done in enumerate(pool.imap_unordered(train, jobs), 1):
            print(f"[{i}/{len(jobs)}] {done}", flush=True)
    pairs = []
    for family, m, sides in partners:
        b = json.loads((sides[changed] / "metrics.json").read_text())
        m = json.loads((sides[base] / "metrics.json").read_text()) if a.base_here else m
        task, net, method = cell_key(family, m["config"])
        pairs.append({"task": task, "net": net, "method": method, "seed": m["config"]["seed"],
                      "metric": "test error %" if family == "feedforward" else "largest length",
                      base: metric(family, m), changed: metric(family, b), f"{base}_step_s": step_s(family, m),
                      f"{changed}_step_s": step_s(family, b),
                      "status": next((r.get("status") for r in (b, m) if r.get("status", "completed") != "completed"),
                                     "completed")})  # non-completed on either side counts
    table = parity_table(pairs, base, changed)
    a.out.mkdir(parents=True, exist_ok=True)
    runtime.atomic_write_bytes(a.out / "parity.csv", pd.DataFrame(pairs).to_csv(index=False).encode())
    text = markdown(table, a.tier, a.out / "runs" if a.base_here else a.runs, base, changed)
    runtime.atomic_write_bytes(a.out / "parity.md", text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
