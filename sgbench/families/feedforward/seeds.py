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

from ... import fast, runtime
from .config import FFConfig
from .run import (
    BatchStream,
    _result_config,
    build_net,
    lr_schedule,
    split_run_data,
    test_error,
    train_ff,
)

log = logging.getLogger(__name__)


def train(config: FFConfig, out_dir):
    """The feed-forward runner the family registry names: config.seeds as one batch (a list of metrics),
    else one run (run.train_ff)."""
    return train_ff_seeds(config, out_dir) if config.seeds else train_ff(config, out_dir)


def seed_dirs(out, seeds: list[int]) -> list[Path]:
    text = str(out)
    return [Path(text.format(seed=s)) if "{seed}" in text else Path(out) / f"seed{s}" for s in seeds]


def stack_refusals(cfg: FFConfig) -> list[str]:
    """What in this config keeps its seeds from training as one batch (empty: nothing)."""
    reasons = [r for r, bad in [
        ("arch cnn (only FCNs stack)", cfg.arch != "fcn"),
        (f"method {cfg.method} (stacked: {', '.join(fast.STACKED_METHODS)})", cfg.method not in fast.STACKED_METHODS),
        ("dni_placement other than every", cfg.dni_placement != "every"),
        ("the fidelity probe (probe_every)", cfg.probe_every > 0),
    ] if bad]
    return reasons + fast.capture_blockers(cfg)


def train_ff_seeds(config: FFConfig, out) -> list[dict]:
    """Train config.seeds as one batch; returns each seed's metrics (also written, see the module doc)."""
    t_start = time.perf_counter()
    seeds = list(config.seeds)
    cfg = dataclasses.replace(config.resolved(), seed=seeds[0], seeds=None)
    refusals = stack_refusals(cfg)
    if refusals or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} cannot train as one batch: "
                         f"{'; '.join(refusals) or 'a seed is repeated'}; run one seed per job")
    dirs = seed_dirs(out, seeds)
    _, device, meta = runtime.start_run(cfg, dirs[0])
    mode = fast.resolve_step(cfg.step, cfg, device)
    mode = "fused" if mode == "eager" else mode  # stacked seeds have no eager form (same arithmetic)
    data, sp = split_run_data(cfg, device)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (sp.train_x, sp.train_y), (sp.val_x, sp.val_y), \
        (sp.test_x, sp.test_y)
    nets = []
    for s in seeds:  # each seed's initialisation is its single run's
        torch.manual_seed(s)
        nets.append(build_net(cfg, data).to(device))
    stacked = fast.StackedFCN(nets).to(device)
    opt = fast.make_optimizer(stacked.trainable_parameters(), cfg.lr, mode, device)
    sched = lr_schedule(opt, cfg)
    streams = [BatchStream(len(train_y), cfg.batch_size, s) for s in seeds]
    n_b = len(nets[0].boundaries or [])
    curves = [{"step": [], "train_loss": [], "test_error": [], "val_error": [], "lr": [], "elapsed_s": [],
               "sg_loss": [[] for _ in range(n_b)], "input_loss": []} for _ in seeds]
    ckpt_path = dirs[0] / "checkpoint-seeds.pt"
    group_config = {"config": _result_config(cfg), "seeds": list(seeds)}
    step, train_time, earlier_wall = 0, 0.0, 0.0
    resumed = _resume(ckpt_path, group_config, device, stacked, opt, sched, streams)
    if resumed:
        curves, step, train_time = resumed["curves"], resumed["step"], resumed["train_time"]
        earlier_wall = resumed["wall_time"]  # of the earlier attempts, up to their last checkpoint
    meta["resumed"] = resumed is not None
    stepper = fast.StackedStepper(mode, stacked, opt, streams, train_x, train_y)
    log.info("train-ff %s/%s-%d/%s seeds %s as one batch on %s (%s step), %d iterations", data.name, cfg.arch,
             cfg.layers, cfg.method, seeds, device, mode, cfg.iterations)
    since = 0
    stacked.train()
    while step < cfg.iterations:
        t0 = time.perf_counter()
        stepper()
        sched.step()
        step, since = step + 1, since + 1
        train_time += time.perf_counter() - t0
        if step % cfg.eval_every == 0 or step == cfg.iterations:
            t0 = time.perf_counter()
            losses, sg_losses = stepper.take(since)  # reads the device: waits for the queued steps
            train_time += time.perf_counter() - t0
            since = 0
            stacked.unstack_into(nets)
            for s, net in enumerate(nets):
                c = curves[s]
                c["step"].append(step)
                c["train_loss"].append(losses[s])
                c["test_error"].append(test_error(net, test_x, test_y, device))
                c["val_error"].append(test_error(net, val_x, val_y, device) if len(val_y) else None)
                c["lr"].append(float(sched.get_last_lr()[0]))
                c["elapsed_s"].append(round(train_time, 3))
                for i in range(n_b):
                    c["sg_loss"][i].append(sg_losses[s][i])
            runtime.atomic_torch_save(ckpt_path, group_config | {
                "curves": curves, "step": step, "train_time": train_time,
                "wall_time": earlier_wall + time.perf_counter() - t_start, "stacked": stacked.state_dict(),
                "opt": opt.state_dict(), "sched": sched.state_dict(), "streams": [s.state_dict() for s in streams]})
            log.info(runtime.progress_line(step, cfg.iterations, train_time,
                                           "test error " + " ".join(f"{c['test_error'][-1]:.2f}%" for c in curves)))
    results = []
    for s, seed in enumerate(seeds):
        seed_cfg = dataclasses.replace(cfg, seed=seed)  # seeds=None: each file describes its own run
        results.append(_write_metrics(seed_cfg, dirs[s], data, nets[s], curves[s], (len(train_y), len(val_y), len(test_y)),
                                      train_time, earlier_wall + time.perf_counter() - t_start,
                                      meta | {"seeds_in_job": list(seeds)}, mode))
    ckpt_path.unlink(missing_ok=True)
    return results


def _resume(path: Path, group_config: dict, device, stacked, opt, sched, streams) -> dict | None:
    """The group's checkpoint, loaded into the stacked model, optimizer, schedule and streams, if it was
    made by the same config and seeds (else None: start afresh)."""
    ckpt = runtime.load_checkpoint(path, device, group_config, log.warning)
    if ckpt is None:
        return None
    runtime.restore(ckpt, {"stacked": stacked, "opt": opt, "sched": sched})
    for stream, state in zip(streams, ckpt["streams"]):
        stream.load_state_dict(state)
    log.info("resuming seeds %s from %s at step %d", group_config["seeds"], path, ckpt["step"])
    return ckpt


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


def _write_metrics(cfg: FFConfig, out_dir: Path, data, net, curves: dict, sizes: tuple[int, int, int],
                   train_time: float, wall_time: float, meta: dict, mode: str) -> dict:
    """One seed's metrics.json, in the single run's form (timing: the whole group's, shared: a step
    trains every seed of the job, meta.seeds_in_job)."""
    n_b = len(net.boundaries or [])
    diverged = _divergence(curves)
    metrics = {
        "schema": "sgbench.ff_metrics/1",
        "status": "diverged" if diverged else "completed",
        "experiment": "feedforward",
        "tier": cfg.tier,
        "config": dataclasses.asdict(cfg),
        "dataset": {"requested": cfg.dataset, "variant": data.name, "source": data.source,
                    "n_train": sizes[0], "n_val": sizes[1], "n_test": sizes[2]},
        "model": {"parameters": sum(p.numel() for p in net.model_parameters()),
                  "sg_parameters": sum(p.numel() for p in net.sg_parameters()),
                  "input_parameters": 0, "boundaries": n_b, "dni_boundaries": sum(net.placed)},
        "curves": curves,
        "final": {"test_error": curves["test_error"][-1], "val_error": curves["val_error"][-1],
                  "train_loss": curves["train_loss"][-1],
                  "sg_loss": [c[-1] for c in curves["sg_loss"]], "input_loss": [],
                  # every layer that trains updates at every step (stacked runs have no asynchronous updates)
                  "update_fraction": [float(any(p.requires_grad for p in g)) for g in net.layer_parameters()]},
        "timing": {"wall_time_s": round(wall_time, 3), "train_time_s": round(train_time, 3),
                   "steps_per_s": round(cfg.iterations / train_time, 3) if train_time > 0 else None,
                   "step": mode},
        "meta": meta,
    }
    if diverged:
        metrics["diverged"] = diverged
    metrics = runtime.json_safe(metrics)
    runtime.validate(metrics, "ff_metrics")
    runtime.atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
