"""RNN replication runs ([DNI] Sec. 3.1): copy / repeat copy with truncated BPTT, DNI, DNI+Aux, BP(λ).

An LSTM reads B continuous streams of episodes (sgbench.tasks), T steps per update, its state
carried across windows. Per method, at the end of each window:

* bptt: the state is cut (detached); the gradient of future losses is lost.
* dni: the SG model predicts the per-example gradient of all future losses w.r.t. the state
  [h; c]; `sg_scale` times it is injected there in the same backward pass as the window's own
  loss. The SG at a window's start state is regressed towards the bootstrapped target of [DNI]:
  the gradient of this window's losses plus `sg_discount` times the SG at its end carried back
  through it (g + γ Jᵀ SG). Injection scale and discount are separate settings: the SG learns a
  γ-discounted future gradient whatever it is scaled by when injected.
* dni_aux: dni, and the LSTM also predicts, from its output at the window's first step, the
  synthetic gradient injected at the window's end ([DNI]'s auxiliary task).
* dni_bpl: dni with the SG trained by BP(λ) (sgbench.dni.BPLambda): towards the λ-return over the
  next `bpl_horizon` windows (λ = 0 is dni's target).

Per window boundary a run measures the SG's training target, the SG there and their cosine; for
bptt the gradient truncation drops there. With `probe_every` > 0, SG runs also compare the SG on a
fixed probe stream with the exact future gradient (sgbench.families.rnn.signal). Every run ends with
the signal measurement: how well the best linear SG could predict the exact future gradient.

The run checkpoints (model, optimizer, carried state, stream generators, curriculum, curves) at a
logged point once `checkpoint_every_s` seconds have passed since the last checkpoint (0: at every
one), and at the end; a rerun resumes from it bit-exactly. A non-finite loss stops the run as
`diverged`, with a valid metrics.json; so does a finite one beyond runtime.ABSURD_LOSS times chance's.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ... import runtime
from ...nets import SequenceNet
from ...tasks import Curriculum, EpisodeStream, Task, bits, window_errors
from .config import NON_RESULT_FIELDS, RNNConfig
from .signal import SIGNAL_KEYS, linear_sg_signal, sg_probe

log = logging.getLogger(__name__)
CURVES = ("timestep", "bits_per_output_step", "bits_per_sequence", "length", "boundary_target_norm",
          "boundary_sg_norm", "boundary_target_cosine", "elapsed_s")
MEMORY_KEYS = ("activation_memory_mb", "peak_memory_mb")  # runtime.step_memory
PROBE_CURVES = ("probe_timestep", "probe_cosine_exact", "probe_cosine_discounted", "probe_norm_ratio_exact")


class RunInterrupted(RuntimeError):
    """Raised by the `_stop_after` test hook, as a kill would stop a run (its checkpoint is written)."""


def make_optimizer(model: SequenceNet, cfg) -> torch.optim.Adam:
    """Adam with two rates: the network's (cfg.lr) and the SG model's own (cfg.sg_lr). The SG regresses
    a bootstrapped target that moves with the network; at the network's rate it can chase its own
    bootstrap and diverge (issue #24: H = 256)."""
    groups = [{"params": model.network_parameters(), "lr": cfg.lr}]
    if model.boundary is not None:
        groups.append({"params": list(model.boundary.parameters()), "lr": cfg.sg_lr})
    return torch.optim.Adam(groups)


class WindowTrainer:
    """One update per window, and what crosses windows: the carried state and (dni_bpl) the windows
    the λ-return still needs. `state_dict` holds all of it, for resuming."""

    def __init__(self, model: SequenceNet, opt, cfg, device, errors_fn=None):
        # cfg: any run config with method, batch_size, clip, sg_* , aux_weight and bpl_* fields (rnn, charlm).
        # errors_fn(logits, y, mask) -> per-step losses [T, B] in nats (default: the copy tasks' bits loss).
        self.model, self.opt, self.cfg = model, opt, cfg
        self.errors_fn = errors_fn or window_errors
        self.rule = None if model.boundary is None else model.boundary.rule  # BPLambda (sgbench.nets.SequenceNet)
        self.state = model.initial_state(cfg.batch_size, device)
        self.history: collections.deque = collections.deque()
        self.last_target: torch.Tensor | None = None  # the latest SG target (per example): logging, tests
        self.memory: dict | None = None  # measured on the first window (runtime.step_memory): A1's memory vs T

    def window_loss(self, start, window):
        """(batch-summed loss of a window run from `start`, its end state)."""
        x, y, mask = window
        logits, _, end = self.model(x, start)
        return self.errors_fn(logits, y, mask).sum(), end

    def step(self, x, y, mask):
        """Train on one window. Returns (errors [T, B] in nats, boundary stats [3] or [1]). The first
        window also measures the memory a window's update holds (every later one holds the same)."""
        if self.memory is None:
            with runtime.step_memory(x.device, exclude=list(self.model.parameters())) as memory:
                result = self._step(x, y, mask)
            self.memory = memory
            return result
        return self._step(x, y, mask)

    def _step(self, x, y, mask):
        model, cfg, batch = self.model, self.cfg, x.shape[1]
        self.opt.zero_grad(set_to_none=True)
        start = self.state.detach().requires_grad_()
        logits, out, end = model(x, start)
        errors = self.errors_fn(logits, y, mask)
        loss_sum = errors.sum()
        if self.rule is None:  # truncated BPTT; the leaf measures what truncation drops
            (loss_sum / batch).backward()
            stats = (start.grad * batch).norm(dim=1).mean().reshape(1)  # per example, as the SG's targets
        else:
            sg_end = model.synthetic_gradient(end).detach()
            objective, stats = self._sg_objective(start, end, loss_sum, out, sg_end, (x, y, mask))
            torch.autograd.backward([objective, end], [None, cfg.sg_scale * sg_end / batch])
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        self.opt.step()
        self.state = end.detach()
        return errors.detach(), stats

    def _sg_objective(self, start, end, loss_sum, out, sg_end, window):
        """The window's loss (batch mean), the aux loss, and the SG loss of the boundary whose target is
        known now; with the boundary stats (target norm, SG norm, cosine)."""
        cfg, batch = self.cfg, start.shape[0]
        objective = loss_sum / batch
        if self.model.aux_head is not None:
            objective = objective + cfg.aux_weight * F.mse_loss(self.model.aux_head(out[0]), cfg.sg_scale * sg_end)
        if self.rule.horizon == 1:  # the bootstrapped target from this window's own graph: g + γ Jᵀ SG(end)
            (target,) = torch.autograd.grad([loss_sum, end], [start],
                                            [torch.ones_like(loss_sum), self.rule.discount * sg_end],
                                            retain_graph=True)
            boundary = start.detach()
        else:
            self.history.append((start.detach(), *(t.detach() for t in window)))
            if len(self.history) < self.rule.horizon:
                return objective, torch.full((3,), math.nan, device=start.device)
            boundary, *_ = self.history[0]
            target = self.rule.lambda_return(self.window_loss, self.model.synthetic_gradient, boundary,
                                             [w[1:] for w in self.history])
            self.history.popleft()
        sg = self.model.synthetic_gradient(boundary)
        self.last_target = target
        stats = torch.stack([target.norm(dim=1).mean(), sg.detach().norm(dim=1).mean(),
                             F.cosine_similarity(sg.detach(), target, dim=1, eps=1e-12).mean()])
        return objective + self.cfg.sg_loss_weight * self.rule.loss(sg, target)[0], stats

    def state_dict(self) -> dict:
        return {"state": self.state, "history": list(self.history), "memory": self.memory}

    def load_state_dict(self, d: dict) -> None:
        self.state, self.history = d["state"], collections.deque(d["history"])
        self.memory = d.get("memory")

    def cost(self, timestep: int, train_time: float) -> dict:
        """metrics.json's cost of a window update: seconds per update (train time over windows) and the
        memory the first one held (A1: BPTT's memory and step time against T)."""
        windows = timestep // self.cfg.T
        memory = self.memory or dict.fromkeys(MEMORY_KEYS)
        return {"step_s": round(train_time / windows, 6) if windows and train_time > 0 else None,
                **{k: None if v is None else round(v, 4) for k, v in memory.items()}}


def train_rnn(config: RNNConfig, out_dir, *, _stop_after: int | None = None) -> dict:
    """Train one RNN run; returns the metrics dict also written to out_dir/metrics.json.
    `_stop_after` (tests only) stops after the checkpoint at that time step, as a kill would."""
    t_start = time.perf_counter()
    cfg = config.resolved()
    out_dir, device, meta = runtime.start_run(cfg, out_dir)
    task = Task(cfg.task, cfg.layout, cfg.schedule, cfg.repeat_norm)
    stream = EpisodeStream(task, cfg.batch_size, cfg.seed, device, cfg.streams == "desync")
    curriculum = Curriculum(cfg.threshold, cfg.curriculum_window, unit=cfg.threshold_unit)
    model = SequenceNet(task.in_dim, task.out_dim, cfg).to(device)
    opt = make_optimizer(model, cfg)
    trainer = WindowTrainer(model, opt, cfg, device)
    run = {"timestep": 0, "train_time": 0.0, "wall_before": 0.0, "diverged": None, "resumed": False,
           "curriculum": [dict(timestep=0, **task.level(1))],
           "curves": {k: [] for k in CURVES + (PROBE_CURVES if cfg.probe_every else ())}}
    ckpt_path = out_dir / "checkpoint.pt"
    stateful = {"model": model, "opt": opt, "stream": stream, "curriculum": curriculum, "trainer": trainer}
    if resume(ckpt_path, _result_config(cfg), device, stateful, run):
        run["resumed"] = True
    log.info("train-rnn %s/%s T=%d seed %d on %s, %d time steps x %d streams (%s layout, %s lengths)", cfg.task,
             cfg.method, cfg.T, cfg.seed, device, cfg.timesteps, cfg.batch_size, cfg.layout, cfg.schedule)
    _train(cfg, task, stream, curriculum, trainer, run, device, ckpt_path, stateful, _stop_after, t_start)

    signal = (dict.fromkeys(SIGNAL_KEYS) if run["diverged"]  # the parameters are not finite any more
              else linear_sg_signal(model, task, curriculum.level, cfg, device))
    wall = run["wall_before"] + time.perf_counter() - t_start  # every attempt's wall time
    metrics = _metrics(cfg, task, model, trainer, curriculum, run, meta, signal, wall)
    runtime.validate(metrics, "rnn_metrics")
    runtime.atomic_write_json(out_dir / "metrics.json", metrics)
    ckpt_path.unlink(missing_ok=True)
    log.info("%s: largest length solved %d -> %s", metrics["status"], metrics["final"]["largest_length_solved"],
             out_dir / "metrics.json")
    return metrics


def _train(cfg, task, stream, curriculum, trainer, run, device, ckpt_path, stateful, stop_after, t_start):
    log_every = max(cfg.T, cfg.timesteps // cfg.log_points)
    acc = _Interval(device)
    next_log = (run["timestep"] // log_every + 1) * log_every
    last_print = last_save = time.perf_counter()
    while run["timestep"] < cfg.timesteps:
        t0 = time.perf_counter()
        x, y, mask = stream.window(cfg.T, curriculum.level)
        errors, stats = trainer.step(x, y, mask)
        errors = bits(errors)
        total = errors.sum()
        # chance: one bit per output bit at every step of the window (a bound: not every step is scored)
        if runtime.absurd(float(total), cfg.T * cfg.batch_size * task.out_dim):
            run["diverged"] = {"step": run["timestep"] + cfg.T, "last_finite": _last_finite(run["curves"])}
            log.warning("non-finite or absurd loss at time step %d: stopping (diverged)", run["diverged"]["step"])
            break
        acc.add(total, mask.sum(), stats)
        for level, seq_bits, outputs in stream.finish_window(errors):
            curriculum.record(level, seq_bits, outputs)
            acc.add_sequence(level == curriculum.level, seq_bits)
        run["timestep"] += cfg.T
        if curriculum.maybe_advance():
            run["curriculum"].append(dict(timestep=run["timestep"], **task.level(curriculum.level)))
            log.info("passed length %d at time step %d", task.level(curriculum.solved)["length"], run["timestep"])
        run["train_time"] += time.perf_counter() - t0
        timestep = run["timestep"]
        if cfg.probe_every and (timestep // cfg.probe_every > (timestep - cfg.T) // cfg.probe_every
                                or timestep >= cfg.timesteps):
            probe = sg_probe(trainer.model, task, curriculum.level, cfg, device)
            run["curves"]["probe_timestep"].append(timestep)
            for k, v in probe.items():
                run["curves"][f"probe_{k}"].append(v)
        if timestep >= next_log or timestep >= cfg.timesteps:
            acc.flush_into(run["curves"], timestep, task.level(curriculum.level)["length"], run["train_time"])
            next_log += log_every
            stop = stop_after is not None and timestep >= stop_after
            # a checkpoint costs a save and an fsync: at a logged point once checkpoint_every_s have
            # passed since the last one, and at the last (what the final measurement starts from)
            if time.perf_counter() - last_save >= cfg.checkpoint_every_s or timestep >= cfg.timesteps or stop:
                wall = run["wall_before"] + time.perf_counter() - t_start
                runtime.atomic_torch_save(ckpt_path, {"config": _result_config(cfg),
                                                      "run": {**run, "wall_before": wall},
                                                      **{k: obj.state_dict() for k, obj in stateful.items()}})
                last_save = time.perf_counter()
            if stop:
                raise RunInterrupted(f"stopped after time step {timestep} (test hook)")
        if time.perf_counter() - last_print > 30 or timestep >= cfg.timesteps:
            _log_progress(timestep, cfg.timesteps, run["train_time"], run["curves"])
            last_print = time.perf_counter()


def _result_config(cfg: RNNConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NON_RESULT_FIELDS}


def resume(ckpt_path: Path, config: dict, device, stateful: dict, run: dict) -> bool:
    """Load every stateful piece and the run's progress from a checkpoint of the same resolved config
    (its result fields), if any; the char-LM runner's too."""
    ckpt = runtime.load_checkpoint(ckpt_path, device, {"config": config}, log.warning)
    if ckpt is None:
        return False
    runtime.restore(ckpt, stateful)
    run.update(ckpt["run"])
    log.info("resuming from %s at time step %d", ckpt_path, run["timestep"])
    return True


def _last_finite(curves: dict) -> dict:
    keys = ("bits_per_output_step", "bits_per_sequence", "length")
    return {k: curves[k][-1] for k in keys if curves[k]} if curves["timestep"] else {}


def _metrics(cfg, task, model, trainer, curriculum, run, meta, signal, wall) -> dict:
    # nothing solved: length 0, and N 0 where levels fix N (None where each episode draws its own)
    none = {"N": None if task.level(1)["N"] is None else 0, "R": None, "length": 0}
    solved = task.level(curriculum.solved) if curriculum.solved else none
    train_time = run["train_time"]
    metrics = {
        "schema": "sgbench.rnn_metrics/1",
        "status": "diverged" if run["diverged"] else "completed",
        "experiment": "rnn",
        "tier": cfg.tier,
        "config": dataclasses.asdict(cfg),
        "task": {"layout": task.layout, "schedule": task.schedule, "in_dim": task.in_dim, "out_dim": task.out_dim},
        "model": {"parameters": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("boundary")),
                  "sg_parameters": sum(p.numel() for p in model.boundary.parameters()) if model.boundary else 0},
        "curves": run["curves"],
        "curriculum": run["curriculum"],
        "final": {"largest_length_solved": solved["length"], "N_solved": solved["N"], "R_solved": solved["R"],
                  "bits_per_sequence": curriculum.mean_error(), **signal},
        "timing": {"wall_time_s": round(wall, 3),
                   "train_time_s": round(train_time, 3),
                   "timesteps_per_s": round(run["timestep"] / train_time, 3) if train_time > 0 else None,
                   **trainer.cost(run["timestep"], train_time)},
        "meta": {**meta, "resumed": run["resumed"]},
    }
    if run["diverged"]:
        metrics["diverged"] = run["diverged"]
    return metrics


class _Interval:
    """Sums over one logging interval, kept on the device so logging does not sync every window."""

    def __init__(self, device):
        self.device = device
        self.reset()

    def reset(self):
        self.bits = torch.zeros((), device=self.device)
        self.outputs = torch.zeros((), device=self.device)
        self.grad = torch.zeros(3, device=self.device)
        self.n_grad, self.seq = torch.zeros(3, device=self.device), []

    def add(self, bits_sum, n_outputs, stats):
        self.bits += bits_sum
        self.outputs += n_outputs
        ok = torch.isfinite(stats)  # a BP(λ) boundary whose target is not known yet is NaN
        self.grad[:len(stats)] += torch.where(ok, stats, 0.0)
        self.n_grad[:len(stats)] += ok

    def add_sequence(self, at_current_level: bool, seq_bits: float):
        if at_current_level:
            self.seq.append(seq_bits)

    def flush_into(self, curves, timestep, length, train_time):
        n_out = float(self.outputs)
        grad = [float(g / n) if n > 0 else None for g, n in zip(self.grad, self.n_grad)]
        curves["timestep"].append(timestep)
        curves["bits_per_output_step"].append(float(self.bits) / n_out if n_out else None)
        curves["bits_per_sequence"].append(sum(self.seq) / len(self.seq) if self.seq else None)
        curves["length"].append(length)
        curves["boundary_target_norm"].append(grad[0])
        curves["boundary_sg_norm"].append(grad[1])
        curves["boundary_target_cosine"].append(grad[2])
        curves["elapsed_s"].append(round(train_time, 3))
        self.reset()


def _log_progress(timestep, total, train_time, curves):
    last = ""
    if curves["timestep"]:
        bps = curves["bits_per_sequence"][-1]
        last = (f"length {curves['length'][-1]} bits/output {curves['bits_per_output_step'][-1] or 0:.3f}"
                + (f" bits/seq {bps:.3f}" if bps is not None else ""))
    log.info(runtime.progress_line(timestep, total, train_time, last))
