"""RNN replication runs ([DNI] Sec. 3.1): copy / repeat copy with truncated BPTT, DNI, DNI+Aux.

An LSTM reads B continuous streams of episodes (sgbench.tasks), T steps per update, its
state carried across windows. Per method, at the end of each window:

* bptt: the state is cut (detached); the gradient of future losses is lost.
* dni: a DNI boundary (sgbench.dni, the same one the feed-forward nets use) predicts the
  gradient of all future losses w.r.t. the state [h; c] and injects it there, in the same
  backward pass as the window's own loss. Its target is what arrives at that state during
  the *next* window's backward: the true gradient of the next window's losses plus the
  next boundary's synthetic gradient carried back through the next window — the
  bootstrapped target of [DNI].
* dni_aux: dni, and the LSTM also predicts, from its output at the window's first step,
  the synthetic gradient that will be injected at the window's end (T - 1 steps later,
  the furthest ahead a prediction inside the window can look): [DNI]'s auxiliary task.

A run measures, per window boundary, the norm of the gradient arriving there from the
next window, the norm of the synthetic gradient injected there, and their cosine: the
numbers that say whether the future gradient truncation discards is negligible.
With `probe_every` = n > 0 (dni / dni_aux), every n time steps the SG fidelity probe
(sgbench.fidelity.rnn_fidelity) also compares the SG at a boundary of a fixed probe stream with
the exact gradient of the next `probe_horizon` windows' losses (one untruncated unroll).

A killed run leaves no metrics.json; rerunning starts it afresh (runs are short, and the
recurrent state crossing a boundary cannot be checkpointed without changing the numbers).
"""
from __future__ import annotations

import dataclasses
import logging
import time

import torch
import torch.nn.functional as F

from ... import runtime
from ...fidelity import rnn_fidelity
from ...nets import SequenceNet
from ...tasks import Curriculum, EpisodeStream, Task, bits, window_errors
from .config import RNNConfig

log = logging.getLogger(__name__)


def train_window(model: SequenceNet, opt, state: torch.Tensor, x, y, mask, aux_weight: float = 1.0):
    """One update on one window. Returns (per-step errors [T, B] in nats, the next window's
    initial state, the synthetic gradient injected at this window's end (per example) or None).

    The loss is the batch mean of the summed errors, so per example it is the sum over all
    steps: the SG target is the gradient of *all* future losses, undiscounted.
    """
    opt.zero_grad(set_to_none=True)
    logits, out, end = model(x, state)
    errors = window_errors(logits, y, mask)
    loss = errors.sum() / x.shape[1]
    if model.boundary is None:  # truncated BPTT; the leaf lets us measure what truncation drops
        loss.backward()
        opt.step()
        return errors.detach(), end.detach().requires_grad_(), None
    next_state, injected = model.boundary.split(end)
    sg = injected * x.shape[1]  # per-example synthetic gradient, as injected
    if model.aux_head is not None:
        loss = loss + aux_weight * F.mse_loss(model.aux_head(out[0]), sg)
    torch.autograd.backward([loss, end], [None, injected])  # one pass: window loss + SG at its end
    next_state.retain_grad()  # the gradient the next window sends back: the SG's target
    opt.step()
    return errors.detach(), next_state, sg


def boundary_stats(state: torch.Tensor, sg: torch.Tensor | None):
    """(norm of the gradient that arrived at a window's initial state, norm of the SG injected
    there, their cosine), per example and averaged over the batch. Gradients per example."""
    if state.grad is None:
        return None
    arrived = state.grad * state.shape[0]
    stats = [arrived.norm(dim=1).mean()]
    if sg is not None:
        stats += [sg.norm(dim=1).mean(), F.cosine_similarity(sg, arrived, dim=1, eps=1e-12).mean()]
    return torch.stack(stats)


def train_rnn(config: RNNConfig, out_dir) -> dict:
    """Train one RNN run; returns the metrics dict also written to out_dir/metrics.json."""
    t_start = time.perf_counter()
    cfg = config.resolved()
    out_dir, device, meta = runtime.start_run(cfg, out_dir)

    task = Task(cfg.task, cfg.repeat_norm)
    stream = EpisodeStream(task, cfg.batch_size, cfg.seed)
    curriculum = Curriculum(cfg.threshold, cfg.curriculum_window)
    model = SequenceNet(task.in_dim, task.out_dim, cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    trace = [dict(timestep=0, **task.level(0))]
    curves = {k: [] for k in ("timestep", "bits_per_output_step", "bits_per_sequence", "length",
                              "boundary_true_grad_norm", "boundary_sg_norm", "boundary_cosine", "elapsed_s")}
    if cfg.probe_every:
        curves |= {k: [] for k in ("probe_timestep", "probe_cosine", "probe_rel_error", "probe_norm_ratio")}
    log_every = max(cfg.T, cfg.timesteps // cfg.log_points)
    log.info("train-rnn %s/%s T=%d seed %d on %s, %d time steps x %d streams", cfg.task, cfg.method, cfg.T,
             cfg.seed, device, cfg.timesteps, cfg.batch_size)

    state, sg = model.initial_state(cfg.batch_size, device), None
    acc = _Interval(device, with_sg=model.boundary is not None)
    timestep, train_time, next_log, last_print = 0, 0.0, log_every, time.perf_counter()
    while timestep < cfg.timesteps:
        t0 = time.perf_counter()
        x, y, mask = (t.to(device) for t in stream.window(cfg.T, curriculum.level))
        errors, next_state, next_sg = train_window(model, opt, state, x, y, mask, cfg.aux_weight)
        acc.add_boundary(boundary_stats(state, sg))  # the previous boundary's target has now arrived
        state, sg = next_state, next_sg
        errors = bits(errors)
        acc.add_window(errors.sum(), mask.sum())
        for level, seq_bits in stream.finish_window(errors):
            curriculum.record(level, seq_bits)
            acc.add_sequence(level == curriculum.level, seq_bits)
        if curriculum.maybe_advance():
            trace.append(dict(timestep=timestep + cfg.T, **task.level(curriculum.level)))
            log.info("passed length %d at time step %d", task.level(curriculum.solved)["length"], timestep + cfg.T)
        timestep += cfg.T
        train_time += time.perf_counter() - t0
        if cfg.probe_every and (timestep // cfg.probe_every > (timestep - cfg.T) // cfg.probe_every
                                or timestep >= cfg.timesteps):
            probe = rnn_fidelity(model, task, curriculum.level, cfg.T, cfg.probe_horizon, cfg.batch_size,
                                 cfg.seed, device)
            curves["probe_timestep"].append(timestep)
            for k, v in probe.items():
                curves[f"probe_{k}"].append(v)
        if timestep >= next_log or timestep >= cfg.timesteps:
            acc.flush_into(curves, timestep, task.level(curriculum.level)["length"], train_time)
            next_log += log_every
        if time.perf_counter() - last_print > 30 or timestep >= cfg.timesteps:
            _log_progress(timestep, cfg.timesteps, train_time, curves)
            last_print = time.perf_counter()

    solved = task.level(curriculum.solved) if curriculum.solved >= 0 else {"N": 0, "R": None, "length": 0}
    metrics = {
        "schema": "sgbench.rnn_metrics/1",
        "status": "complete",
        "experiment": "rnn",
        "tier": cfg.tier,
        "config": dataclasses.asdict(cfg),
        "model": {"parameters": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("boundary")),
                  "sg_parameters": sum(p.numel() for p in model.boundary.parameters()) if model.boundary else 0},
        "curves": curves,
        "curriculum": trace,
        "final": {"largest_length_solved": solved["length"], "N_solved": solved["N"], "R_solved": solved["R"],
                  "bits_per_sequence": curriculum.mean_error()},
        "timing": {"wall_time_s": round(time.perf_counter() - t_start, 3), "train_time_s": round(train_time, 3),
                   "timesteps_per_s": round(timestep / train_time, 3) if train_time > 0 else None},
        "meta": meta,
    }
    runtime.validate(metrics, "rnn_metrics")
    runtime.atomic_write_json(out_dir / "metrics.json", metrics)
    log.info("done: largest length solved %d -> %s", solved["length"], out_dir / "metrics.json")
    return metrics


class _Interval:
    """Sums over one logging interval, kept on the device so logging does not sync every window."""

    def __init__(self, device, with_sg: bool):
        self.device, self.with_sg = device, with_sg
        self.reset()

    def reset(self):
        self.bits = torch.zeros((), device=self.device)
        self.outputs = torch.zeros((), device=self.device)
        self.grad = torch.zeros(3, device=self.device)
        self.n_grad, self.seq = 0, []

    def add_window(self, bits_sum, n_outputs):
        self.bits += bits_sum
        self.outputs += n_outputs

    def add_boundary(self, stats):
        if stats is not None:
            self.grad[:len(stats)] += stats
            self.n_grad += 1

    def add_sequence(self, at_current_level: bool, seq_bits: float):
        if at_current_level:
            self.seq.append(seq_bits)

    def flush_into(self, curves, timestep, length, train_time):
        n_out = float(self.outputs)
        grad = (self.grad / self.n_grad).tolist() if self.n_grad else [None] * 3
        has_sg = self.with_sg and self.n_grad > 0
        curves["timestep"].append(timestep)
        curves["bits_per_output_step"].append(float(self.bits) / n_out if n_out else None)
        curves["bits_per_sequence"].append(sum(self.seq) / len(self.seq) if self.seq else None)
        curves["length"].append(length)
        curves["boundary_true_grad_norm"].append(grad[0])
        curves["boundary_sg_norm"].append(grad[1] if has_sg else None)
        curves["boundary_cosine"].append(grad[2] if has_sg else None)
        curves["elapsed_s"].append(round(train_time, 3))
        self.reset()


def _log_progress(timestep, total, train_time, curves):
    last = ""
    if curves["timestep"]:
        bps = curves["bits_per_sequence"][-1]
        last = (f"length {curves['length'][-1]} bits/output {curves['bits_per_output_step'][-1] or 0:.3f}"
                + (f" bits/seq {bps:.3f}" if bps is not None else ""))
    log.info(runtime.progress_line(timestep, total, train_time, last))
