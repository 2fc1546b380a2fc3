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
import logging
import math
import time

import torch
import torch.nn.functional as F

from ... import loop, optim, runtime
from ...loop import RunInterrupted  # noqa: F401  (the runners' test hook; tests import it from here)
from ...nets import SequenceNet
from ...tasks import Curriculum, EpisodeStream, Task, bits, window_errors
from .config import NON_RESULT_FIELDS, RNNConfig
from .signal import SIGNAL_KEYS, linear_sg_signal, sg_probe

log = logging.getLogger(__name__)
CURVES = ("timestep", "bits_per_output_step", "bits_per_sequence", "length", "boundary_target_norm",
          "boundary_sg_norm", "boundary_target_cosine", "elapsed_s")
MEMORY_KEYS = ("activation_memory_mb", "peak_memory_mb")  # runtime.step_memory
PROBE_CURVES = ("probe_timestep", "probe_cosine_exact", "probe_cosine_discounted", "probe_norm_ratio_exact")


def make_optimizer(model: SequenceNet, cfg) -> torch.optim.Adam:
    """Adam with two rates: the network's (cfg.lr) and the SG model's own (cfg.sg_lr). The SG regresses
    a bootstrapped target that moves with the network; at the network's rate it can chase its own
    bootstrap and diverge (issue #24: H = 256).

    On a CPU each rate's parameters become views of one flat parameter (`flat_parameter`): Adam's
    elementwise update then runs once per group instead of once per tensor, the same arithmetic on
    every element (the same numbers), in about half the time at H = 64 (issue #24). On CUDA the
    parameters stay as they are: cuDNN keeps the LSTM's weights in a flat buffer of its own, and Adam
    already updates all tensors of a group in one foreach call there."""
    flat = flat_adam(model)
    groups = [{"params": model.network_parameters(), "lr": cfg.lr}]
    if model.boundary is not None:
        groups.append({"params": list(model.boundary.parameters()), "lr": cfg.sg_lr, "sg_model": True})
    for group in groups if flat else ():
        group["params"], group["flat"] = [flat_parameter(group["params"])], True
    return optim.Adam(groups)


def flat_adam(model: SequenceNet) -> bool:
    """Whether make_optimizer flattens the model's parameters (on a CPU). A checkpoint's identity
    holds it: the optimizer's state of one layout does not load into the other (a checkpoint written
    before issue #24, or on the other kind of device, is not resumed but started afresh)."""
    return model.lstm.weight_ih_l0.device.type == "cpu"


def flat_parameter(params: list[torch.nn.Parameter]) -> torch.nn.Parameter:
    """One parameter holding the values of `params`, which become views of it; its gradient is a zero
    buffer of which their gradients are views, so a backward pass accumulates into it in place (0 + g
    is g). Its gradient must therefore be zeroed (`zero_grad(set_to_none=False)`), never set to None,
    and the model's own gradients never replaced."""
    flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        p.data = flat.data[offset:offset + p.numel()].view_as(p)
        p.grad = flat.grad[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat


def flat_adam_step(opt: torch.optim.Adam, groups: list[dict]) -> None:
    """The optimizer's step on `groups` of make_optimizer's flat parameters (one per group, moments
    already made): sgbench.optim.update, Adam's arithmetic as torch does it, without the per-call work
    of Optimizer.step (hooks, profiler scope, option checks), a third of a small LSTM's update (issue
    #24). Only make_optimizer's settings: no weight decay, amsgrad or maximize."""
    with torch.no_grad():
        for group in groups:
            (param,) = group["params"]
            optim.update(param, param.grad, opt.state[param], group["lr"], *group["betas"], group["eps"])


def forward_fp32(*tensors):
    """The window's outputs back in fp32 after a bf16 forward (a no-op in fp32): the losses, the aux head,
    the SG model on the end state and the SG regression (target, loss) then run in fp32, and the state
    carried to the next window stays fp32. The casts are differentiable, so the backward still reaches
    the bf16 recurrence."""
    return tuple(t.float() for t in tensors)


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
        # d(sum / B) / d(sum), computed as autograd's division node would: 1 / B in the loss's precision
        self.batch_mean = torch.ones((), device=device) / cfg.batch_size
        self.history: collections.deque = collections.deque()
        self.last_target: torch.Tensor | None = None  # the latest SG target (per example): logging, tests
        self.memory: dict | None = None  # measured on the first window (runtime.step_memory): A1's memory vs T
        # make_optimizer's flat parameters (a CPU); no optimizer: a trainer that only measures (window_loss)
        self.flat = opt is not None and all(g.get("flat") for g in opt.param_groups)

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
        if self.flat:  # flat gradients (make_optimizer): zeroed, never None; one buffer per rate
            for group in self.opt.param_groups:
                group["params"][0].grad.zero_()
        else:
            self.opt.zero_grad(set_to_none=False)
        start = self.state.detach().requires_grad_()
        with runtime.autocast(cfg.precision, x.device):  # only the recurrence; see forward_fp32
            logits, out, end = model(x, start)
        logits, out, end = forward_fp32(logits, out, end)
        errors = self.errors_fn(logits, y, mask)
        loss_sum = errors.sum()
        sg_learns = True  # whether the SG model (if any) has a loss in this window
        if self.rule is None:  # truncated BPTT; the leaf measures what truncation drops
            loss_sum.backward(self.batch_mean)  # the batch mean's gradient, without a division node
            # per example, as the SG's targets; vector_norm is what Tensor.norm calls, less its dispatch
            stats = torch.linalg.vector_norm(start.grad * batch, dim=1).mean().reshape(1)
        else:
            sg_end = model.synthetic_gradient(end).detach()
            objective, stats, sg_learns = self._sg_objective(start, end, loss_sum, out, sg_end, (x, y, mask))
            torch.autograd.backward([objective, end], [None, cfg.sg_scale * sg_end / batch])
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        self._adam_step(sg_learns)
        self.state = end.detach()
        return errors.detach(), stats

    def _adam_step(self, sg_learns: bool) -> None:
        """The optimizer's step. A window without an SG loss (BP(λ)'s first horizon - 1 windows, before
        the first λ-return) leaves the SG model without a gradient; torch's Adam skips a parameter whose
        gradient is None (its moments and step count stay), but flat gradients (make_optimizer) are
        zeroed, never None: the SG's group (make_optimizer's "sg_model") is taken out of that step as it
        would be skipped. Flat parameters whose moments exist take flat_adam_step (the same arithmetic)."""
        groups = [g for g in self.opt.param_groups if sg_learns or not g.get("sg_model")]
        if self.flat and all(self.opt.state[g["params"][0]] for g in groups):
            flat_adam_step(self.opt, groups)
            return
        if sg_learns:
            self.opt.step()
            return
        sg = [p for group in self.opt.param_groups if group.get("sg_model") for p in group["params"]]
        grads = [p.grad for p in sg]
        for p in sg:
            p.grad = None
        self.opt.step()
        for p, grad in zip(sg, grads):
            p.grad = grad

    def _sg_objective(self, start, end, loss_sum, out, sg_end, window):
        """The window's loss (batch mean), the aux loss, and the SG loss of the boundary whose target is
        known now; with the boundary stats (target norm, SG norm, cosine) and whether there was one (BP(λ)
        knows no target before its horizon's first windows have passed)."""
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
                return objective, torch.full((3,), math.nan, device=start.device), False
            boundary, *_ = self.history[0]
            target = self.rule.lambda_return(self.window_loss, self.model.synthetic_gradient, boundary,
                                             [w[1:] for w in self.history])
            self.history.popleft()
        sg = self.model.synthetic_gradient(boundary)
        self.last_target = target
        norm = torch.linalg.vector_norm
        stats = torch.stack([norm(target, dim=1).mean(), norm(sg.detach(), dim=1).mean(),
                             F.cosine_similarity(sg.detach(), target, dim=1, eps=1e-12).mean()])
        return objective + self.cfg.sg_loss_weight * self.rule.loss(sg, target)[0], stats, True

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
    run = loop.new_run("timestep", {k: [] for k in CURVES + (PROBE_CURVES if cfg.probe_every else ())})
    run["curriculum"] = [dict(timestep=0, **task.level(1))]
    stateful = {"model": model, "opt": opt, "stream": stream, "curriculum": curriculum, "trainer": trainer}
    ckpt = loop.Checkpoint(out_dir / "checkpoint.pt", {"config": loop.result_config(cfg, NON_RESULT_FIELDS),
                                                       "flat_adam": flat_adam(model)}, stateful, device, "timestep",
                           t_start, as_recorded=cfg.as_recorded)
    ckpt.resume(run)
    log.info("train-rnn %s/%s T=%d seed %d on %s, %d time steps x %d streams (%s layout, %s lengths)", cfg.task,
             cfg.method, cfg.T, cfg.seed, device, cfg.timesteps, cfg.batch_size, cfg.layout, cfg.schedule)
    loop.train(CopyRun(cfg, task, stream, curriculum, trainer, device), run, ckpt, cfg.timesteps,
               checkpoint_every_s=cfg.checkpoint_every_s, log_at_eval=False, log_every_s=30, stop_after=_stop_after,
               precision=cfg.precision)

    signal = (dict.fromkeys(SIGNAL_KEYS) if run["diverged"]  # the parameters are not finite any more
              else linear_sg_signal(model, task, curriculum.level, cfg, device))
    metrics = _metrics(cfg, task, model, trainer, curriculum, run, out_dir, {**meta, "resumed": run["resumed"]},
                       signal, ckpt.wall(run))
    ckpt.remove()
    log.info("%s: largest length solved %d -> %s", metrics["status"], metrics["final"]["largest_length_solved"],
             out_dir / "metrics.json")
    return metrics


def crossed(done: int, window: int, every: int) -> bool:
    """Whether the window of `window` time steps that ended at `done` crossed a multiple of `every`: the
    logging and evaluation schedule of the window runners (RNN, char-LM)."""
    return done // every > (done - window) // every


class CopyRun(loop.Hooks):
    """The copy tasks' window step (curriculum, divergence against chance), the SG probe, and a logged
    point every timesteps / log_points time steps."""

    def __init__(self, cfg, task, stream, curriculum, trainer, device):
        self.cfg, self.task, self.stream, self.curriculum, self.trainer = cfg, task, stream, curriculum, trainer
        self.device, self.acc = device, _Interval(device)
        self.every = max(cfg.T, cfg.timesteps // cfg.log_points)

    def step(self, run: dict) -> dict | None:
        cfg, curriculum = self.cfg, self.curriculum
        x, y, mask = self.stream.window(cfg.T, curriculum.level)
        errors, stats = self.trainer.step(x, y, mask)
        errors = bits(errors)
        total = errors.sum()
        # chance: one bit per output bit at every step of the window (a bound: not every step is scored)
        if runtime.absurd(float(total), cfg.T * cfg.batch_size * self.task.out_dim):
            return runtime.diverged_record(run["timestep"] + cfg.T, _last_finite(run["curves"]))
        self.acc.add(total, mask.sum(), stats)
        self.acc.seq += curriculum.record_all(self.stream.finish_window(errors))  # the current level's episodes
        run["timestep"] += cfg.T
        if curriculum.maybe_advance():
            run["curriculum"].append(dict(timestep=run["timestep"], **self.task.level(curriculum.level)))
            log.info("passed length %d at time step %d", self.task.level(curriculum.solved)["length"],
                     run["timestep"])
        return None

    def after_step(self, run: dict) -> None:
        cfg, timestep = self.cfg, run["timestep"]
        if cfg.probe_every and (crossed(timestep, cfg.T, cfg.probe_every) or timestep >= cfg.timesteps):
            probe = sg_probe(self.trainer.model, self.task, self.curriculum.level, cfg, self.device)
            run["curves"]["probe_timestep"].append(timestep)
            for k, v in probe.items():
                run["curves"][f"probe_{k}"].append(v)

    def eval_due(self, done: int) -> bool:
        return crossed(done, self.cfg.T, self.every)

    def evaluate(self, run: dict) -> None:
        self.acc.flush_into(run["curves"], run["timestep"], self.task.level(self.curriculum.level)["length"],
                            run["train_time"])

    def detail(self, curves: dict) -> str:
        if not curves["timestep"]:
            return ""
        bps = curves["bits_per_sequence"][-1]
        return (f"length {curves['length'][-1]} bits/output {curves['bits_per_output_step'][-1] or 0:.3f}"
                + (f" bits/seq {bps:.3f}" if bps is not None else ""))


def _last_finite(curves: dict) -> dict:
    keys = ("bits_per_output_step", "bits_per_sequence", "length")
    return {k: curves[k][-1] for k in keys if curves[k]} if curves["timestep"] else {}


def _metrics(cfg, task, model, trainer, curriculum, run, out_dir, meta, signal, wall) -> dict:
    # nothing solved: length 0, and N 0 where levels fix N (None where each episode draws its own)
    none = {"N": None if task.level(1)["N"] is None else 0, "R": None, "length": 0}
    solved = task.level(curriculum.solved) if curriculum.solved else none
    body = {
        "task": {"layout": task.layout, "schedule": task.schedule, "in_dim": task.in_dim, "out_dim": task.out_dim},
        "model": sequence_model_size(model),
        "curves": run["curves"],
        "curriculum": run["curriculum"],
        "final": {"largest_length_solved": solved["length"], "N_solved": solved["N"], "R_solved": solved["R"],
                  "bits_per_sequence": curriculum.mean_error(), **signal},
        "timing": {"timesteps_per_s": loop.rate(run["timestep"], run["train_time"]),
                   **trainer.cost(run["timestep"], run["train_time"])},
    }
    return loop.write_metrics(out_dir, "rnn_metrics", "rnn", cfg, body, diverged=run["diverged"], meta=meta, wall=wall,
                              train_time=run["train_time"])


def sequence_model_size(model: SequenceNet) -> dict:
    """metrics.json's "model" of a sequence run (RNN, char-LM): the network's and the SG's parameters."""
    return {"parameters": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("boundary")),
            "sg_parameters": sum(p.numel() for p in model.boundary.parameters()) if model.boundary else 0}


class _Interval:
    """Sums over one logging interval, kept on the device so logging does not sync every window."""

    def __init__(self, device):
        self.device = device
        self.reset()

    def reset(self):
        self.bits = torch.zeros((), device=self.device)
        self.outputs = torch.zeros((), device=self.device)
        self.grad = torch.zeros(3, device=self.device)
        self.n_grad = torch.zeros(3, device=self.device)
        self.seq: list[float] = []  # bits of each episode at the curriculum's level (CopyRun.step)

    def add(self, bits_sum, n_outputs, stats):
        self.bits += bits_sum
        self.outputs += n_outputs
        ok = torch.isfinite(stats)  # a BP(λ) boundary whose target is not known yet is NaN
        self.grad[:len(stats)] += torch.where(ok, stats, 0.0)
        self.n_grad[:len(stats)] += ok

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
