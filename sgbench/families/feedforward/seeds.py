"""Several seeds of one feed-forward config in one process, as one batched computation (issue #17):
`sgbench train-ff --seeds 0,1,2 --out 'runs/mnist-fcn3-dni-seed{seed}'`.

`train_ff_seeds(config, out)` trains config.seeds side by side (sgbench.fast.StackedFCN: stacked
weights, batched matrix products) and writes one metrics.json per seed, in the same form as a single
run's, into out.format(seed=s) when `out` holds "{seed}", else out/seed<s>. Each seed starts from its
own run's initialisation and sees its own batch order, so its curves are its single run's up to float
rounding (tests/test_fast.py). Runs only what stacks (FCN; backprop, no_bprop, dni, cdni; every
boundary; no warm-up, random updates or probe); anything else is refused before training.
A killed group resumes from its checkpoint (in the first seed's folder), like a single run.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import torch

from ... import fast, loop, runtime
from .config import NON_RESULT_FIELDS, FFConfig
from .run import BatchStream, build_net, ff_metrics, lr_schedule, split_run_data, test_error, train_ff

log = logging.getLogger(__name__)


def train(config: FFConfig, out_dir):
    """The feed-forward runner the family registry names: config.seeds as one batch (a list of metrics),
    else one run (run.train_ff)."""
    return train_ff_seeds(config, out_dir) if config.seeds else train_ff(config, out_dir)


def seed_dirs(out, seeds: list[int]) -> list[Path]:
    text = str(out)
    return [Path(text.format(seed=s)) if "{seed}" in text else Path(out) / f"seed{s}" for s in seeds]


def train_ff_seeds(config: FFConfig, out) -> list[dict]:
    """Train config.seeds as one batch; returns each seed's metrics (also written, see the module doc)."""
    t_start = time.perf_counter()
    seeds = list(config.seeds)
    cfg = dataclasses.replace(config.resolved(), seed=seeds[0], seeds=None)
    refusals = fast.stack_blockers(cfg.arch, cfg.method, cfg.dni_placement == "every", cfg.probe_every > 0) + \
        fast.capture_blockers(cfg)
    if refusals or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} cannot train as one batch: "
                         f"{'; '.join(refusals) or 'a seed is repeated'}; run one seed per job")
    dirs = seed_dirs(out, seeds)
    _, device, meta = runtime.start_run(cfg, dirs[0])
    mode = fast.resolve_step(cfg.step, cfg, device)
    mode = "fused" if mode == "eager" else mode  # stacked seeds have no eager form (same arithmetic)
    data, sp = split_run_data(cfg, device)
    nets = []
    for s in seeds:  # each seed's initialisation is its single run's
        torch.manual_seed(s)
        nets.append(build_net(cfg, data).to(device))
    stacked = fast.StackedFCN(nets).to(device)
    opt = fast.make_optimizer(stacked.trainable_parameters(), cfg.lr, mode, device, cfg.adam)
    sched = lr_schedule(opt, cfg)
    streams = [BatchStream(len(sp.train_y), cfg.batch_size, s) for s in seeds]
    n_b = len(nets[0].boundaries or [])
    run = loop.new_run("step", [{"step": [], "train_loss": [], "test_error": [], "val_error": [], "lr": [],
                                 "elapsed_s": [], "sg_loss": [[] for _ in range(n_b)], "input_loss": []}
                                for _ in seeds])
    stateful = {"stacked": stacked, "opt": opt, "sched": sched, **{f"stream{i}": s for i, s in enumerate(streams)}}
    ckpt = loop.Checkpoint(dirs[0] / "checkpoint-seeds.pt",
                           {"config": loop.result_config(cfg, NON_RESULT_FIELDS), "seeds": list(seeds)},
                           stateful, device, "step", t_start, as_recorded=cfg.as_recorded)
    ckpt.resume(run)
    # after the resume: the stepper copies each stream's restored order to the device
    hooks = StackedRun(cfg, nets, stacked, sp, device, fast.StackedStepper(mode, stacked, opt, streams, sp.train_x,
                                                                           sp.train_y, cfg.precision), sched)
    log.info("train-ff %s/%s-%d/%s seeds %s as one batch on %s (%s step), %d iterations", data.name, cfg.arch,
             cfg.layers, cfg.method, seeds, device, mode, cfg.iterations)
    stacked.train()
    loop.train(hooks, run, ckpt, cfg.iterations, precision=cfg.precision)
    results = []
    for s, seed in enumerate(seeds):
        curves = run["curves"][s]
        seed_cfg = dataclasses.replace(cfg, seed=seed)  # seeds=None: each file describes its own run
        final = {"test_error": curves["test_error"][-1], "val_error": curves["val_error"][-1],
                 "train_loss": curves["train_loss"][-1], "sg_loss": [c[-1] for c in curves["sg_loss"]],
                 "input_loss": [],
                 # every layer that trains updates at every step (stacked runs have no asynchronous updates)
                 "update_fraction": [float(any(p.requires_grad for p in g)) for g in nets[s].layer_parameters()]}
        seed_run = run | {"diverged": _divergence(curves)}
        results.append(ff_metrics(seed_cfg, dirs[s], data, sp, nets[s], curves, final, seed_run, mode,
                                  meta | {"resumed": run["resumed"], "seeds_in_job": list(seeds)}, ckpt.wall(run)))
    ckpt.remove()
    return results


class StackedRun(loop.Hooks):
    """Stacked seeds as a form of the run's step: one update trains every seed; each evaluation writes
    the stacked weights back into each seed's net and appends a point to each seed's curves."""

    def __init__(self, cfg: FFConfig, nets, stacked, sp, device, stepper, sched):
        self.cfg, self.nets, self.stacked, self.sp, self.device = cfg, nets, stacked, sp, device
        self.stepper, self.sched, self.since = stepper, sched, 0
        self.n_b = len(nets[0].boundaries or [])

    def eval_due(self, step: int) -> bool:
        return step % self.cfg.eval_every == 0

    def step(self, run: dict) -> None:
        self.stepper()
        self.sched.step()
        run["step"], self.since = run["step"] + 1, self.since + 1
        return None  # a stacked seed that diverges is marked at its evaluation, not stopped (_divergence)

    def evaluate(self, run: dict) -> None:
        t0 = time.perf_counter()
        losses, sg_losses = self.stepper.take(self.since)  # reads the device: waits for the queued steps
        run["train_time"] += time.perf_counter() - t0
        self.since = 0
        self.stacked.unstack_into(self.nets)
        sp, device = self.sp, self.device
        for s, net in enumerate(self.nets):
            c = run["curves"][s]
            c["step"].append(run["step"])
            c["train_loss"].append(losses[s])
            c["test_error"].append(test_error(net, sp.test_x, sp.test_y, device))
            c["val_error"].append(test_error(net, sp.val_x, sp.val_y, device) if len(sp.val_y) else None)
            c["lr"].append(float(self.sched.get_last_lr()[0]))
            c["elapsed_s"].append(round(run["train_time"], 3))
            for i in range(self.n_b):
                c["sg_loss"][i].append(sg_losses[s][i])
        return None

    def detail(self, curves: list) -> str:
        return "test error " + " ".join(f"{c['test_error'][-1]:.2f}%" for c in curves) if curves[0]["step"] else ""


def _divergence(curves: dict) -> dict | None:
    """A seed whose mean training loss turned non-finite: the diverged record, at the evaluation that
    saw it (its seeds train on as one batch, so a stacked seed is marked, not stopped, and its step is
    that evaluation's, not the exact first non-finite step); None when every logged loss is finite."""
    bad = [i for i, v in enumerate(curves["train_loss"]) if not math.isfinite(v)]
    if not bad:
        return None
    last = {"train_loss": curves["train_loss"][bad[0] - 1] if bad[0] else None,
            "test_error": curves["test_error"][bad[0] - 1] if bad[0] else None}
    return runtime.diverged_record(curves["step"][bad[0]], last)
