"""`sgbench select-lr --tier T`: the fair short-budget protocol (docs/statistics.md).

Trains each method the block tunes (`methods:`; else backprop) at each learning rate of the tier
file's `lr_selection:` grid, at the tier's budget -- the same trials for every method -- picks the
rate with the lowest mean validation error (per method, or backprop's for all), and records the runs
and the choice: in results/reference/lr-selection/<tier>/ and as `lr_selection: chosen:` in the tier
file, which every feed-forward and diagnostics run of the tier then uses.
"""
from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
from pathlib import Path

import pandas as pd
import yaml

from ... import runtime
from ...analysis.lr_selection import (
    SELECTION_COLUMNS,
    choose_lr,
    choose_per_method,
    selection_markdown,
    selection_methods,
    write_chosen,
)
from ...catalog import method as catalog_method
from .config import FFConfig

log = logging.getLogger(__name__)


def tier_settings(tier_doc: dict, method: str) -> dict:
    """The settings the tier's feed-forward grids run `method` with, but the rate (what is tuned), so
    that each method is tuned as the tier runs it (cunlock with the tier's linear input models, a bf16
    tier in bf16). Grids with their own lr take no chosen rate and do not count. Two grids running the
    method with different settings are refused: one rate cannot be chosen for both."""
    found = {}
    for g in tier_doc.get("feedforward") or []:
        if method in g.get("method", []) and "lr" not in g.get("settings", {}):
            found.setdefault(json.dumps(g.get("settings", {}), sort_keys=True), g.get("settings", {}))
    if len(found) > 1:
        raise ValueError(f"the tier's feedforward grids run {method} with different settings ({' and '.join(found)}); "
                         f"one chosen rate cannot serve both: give them the same settings, or one of them its own lr")
    return dict(next(iter(found.values()), {}))


def selection_configs(tier: str, block: dict, threads: int = 0, data_root: str | None = None,
                      tier_doc: dict | None = None) -> dict[str, FFConfig]:
    """{run name: config} of every (method, lr, net, seed) the block declares: the same trials for every
    method, nothing but the learning rate changed, each method with the block's `settings` and the ones
    the tier runs it with (tier_settings; a key set differently in both is refused)."""
    configs = {}
    for name in selection_methods(block):
        catalog_method("feedforward", name)  # an unknown method: an error naming the valid ones
    for method in selection_methods(block):
        own = tier_settings(tier_doc or {}, method)
        clash = sorted(k for k in own.keys() & block.get("settings", {}).keys() if own[k] != block["settings"][k])
        if clash:
            raise ValueError(f"lr_selection settings and the tier's {method} grid disagree on {', '.join(clash)}; "
                             "set them once, in the grid")
        for lr, layers, seed in itertools.product(block["grid"], block["layers"], block["seed"]):
            cfg = FFConfig.from_dict({"dataset": block["dataset"], "arch": block["arch"], "layers": layers,
                                      "method": method, "seed": seed, "iterations": block["iterations"], "lr": lr,
                                      "tier": tier, "threads": threads, "data_root": data_root,
                                      **block.get("settings", {}), **own})
            cfg.resolved()  # a bad value is an error before anything trains
            configs[f"{block['dataset']}-{block['arch']}{layers}-{method}-lr{lr:g}-seed{seed}"] = cfg
    return configs


def checked_finished_runs(configs: dict[str, FFConfig], runs_dir: Path) -> dict[str, dict]:
    """The finished selection runs in `runs_dir` ({name: metrics}), each checked as `sgbench train-ff` checks
    a finished run (runtime.finished_run): one of another config is an error naming the fix, before anything
    trains; a damaged metrics.json is left out, and its run is trained again."""
    from .. import get
    family, fix = get("feedforward"), f"delete it (or all of {runs_dir}) to select afresh"
    finished = {name: runtime.finished_run(runs_dir / name, cfg.resolved(), family, fix)
                for name, cfg in configs.items()}
    return {name: m for name, m in finished.items() if m is not None}


def _train(job: tuple[FFConfig, Path, int]) -> None:
    """One selection run (a module-level function: the pool pickles it). A spawned worker starts with
    logging unset: it is set here for each run, each line led by the run's name, so the runs' progress
    and ETA reach the user; the parent process keeps its own."""
    from .run import train_ff
    cfg, out_dir, level = job
    if multiprocessing.parent_process() is not None:
        logging.basicConfig(level=level, format=f"%(asctime)s {out_dir.name} %(levelname)s %(message)s",
                            datefmt="%H:%M:%S", force=True)
    train_ff(cfg, out_dir)


def train_missing(configs: dict[str, FFConfig], runs_dir: Path, jobs: int) -> None:
    """Train every run of `configs`, `jobs` at a time (one process each; a killed selection
    resumes: finished runs are kept, an unfinished one resumes from its checkpoint). Most costly first
    (DNI's 2 x 1024 SG, deep nets), so that the last runs to finish are short ones."""
    level = logging.getLogger().getEffectiveLevel()
    todo = [(cfg, runs_dir / name, level) for name, cfg in configs.items()]
    todo.sort(key=lambda job: -(1 + (job[0].resolved().sg_hidden_layers or 0) * 10) * job[0].layers)
    log.info("%d selection runs to train, %d at a time", len(todo), jobs)
    if jobs <= 1 or len(todo) <= 1:
        for job in todo:
            _train(job)
        return
    with multiprocessing.get_context("spawn").Pool(min(jobs, len(todo))) as pool:
        for done, _ in enumerate(pool.imap_unordered(_train, todo), 1):
            log.info("selection: %d of %d runs trained", done, len(todo))


def run_selection(tier: str, tiers_dir: Path, out_root: Path, threads: int = 0, data_root: str | None = None,
                  jobs: int = 1):
    """Train (or reuse the finished) selection runs, `jobs` at a time, choose, record; returns the chosen lr
    (a number, or {method: lr} when the block lists `methods:`)."""
    tier_file = Path(tiers_dir) / f"{tier}.yaml"
    text = tier_file.read_text()
    doc = yaml.safe_load(text) or {}
    block = doc.get("lr_selection")
    if not block:
        raise ValueError(f"{tier_file}: no lr_selection: block (this tier keeps the paper's settings)")
    out = Path(out_root) / tier
    configs = selection_configs(tier, block, threads, data_root, doc)
    finished = checked_finished_runs(configs, out / "runs")
    log.info("tier %s: %d selection runs, %d finished in %s", tier, len(configs), len(finished), out / "runs")
    train_missing({k: c for k, c in configs.items() if k not in finished}, out / "runs", jobs)
    rows = []
    for name, cfg in configs.items():
        m = finished.get(name) or json.loads((out / "runs" / name / "metrics.json").read_text())
        final = m.get("final", {})
        rows.append({"dataset": m["dataset"]["variant"], "arch": cfg.arch, "layers": cfg.layers,
                     "method": cfg.method, "lr": cfg.lr,
                     "seed": cfg.seed, "iterations": cfg.iterations, "status": m.get("status", "completed"),
                     "val_error": final.get("val_error"), "test_error": final.get("test_error")})
    runs = pd.DataFrame(rows, columns=SELECTION_COLUMNS)
    lr, by_lr = choose_per_method(runs) if block.get("methods") else choose_lr(runs)
    out.mkdir(parents=True, exist_ok=True)
    runtime.atomic_write_bytes(out / "selection_runs.csv", runs.to_csv(index=False).encode())
    runtime.atomic_write_bytes(out / "selection.md", selection_markdown(tier, block, runs, by_lr, lr).encode())
    runtime.atomic_write_json(out / "selection.json", {"tier": tier, "chosen_lr": lr, "grid": block["grid"],
                                                       "methods": selection_methods(block),
                                                       "by_lr": by_lr.to_dict("records")})
    runtime.atomic_write_bytes(tier_file, write_chosen(text, lr).encode())
    log.info("tier %s: lr %s chosen on validation error; recorded in %s and %s", tier, lr, tier_file, out)
    return lr
