"""How much signal the future gradient carries, and how much of it a synthetic gradient gets (issue #14).

A measurement only: it changes no parameter, optimizer state, BN running statistic or generator of
the run, and its time is not training time. Gradients are per example (the SG's convention), and
every number is over the whole flattened batch: cosine = <a, b> / (|a| |b|) (0 when either is 0).

* `sg_probe`: on a fixed probe stream, the SG at a window boundary against (a) the exact gradient
  of the next `probe_horizon` windows' losses w.r.t. that state (one untruncated unroll; the
  future gradient truncation throws away) and (b) the same with window i's losses weighted by
  γ^(i-1) (`sg_discount`): what the SG is trained towards, at the horizon.
* `linear_sg_signal`: at the end of a run, the exact γ-discounted future gradient at many
  boundaries of probe streams; the best linear SG on [h; c] (ridge least squares, fitted on half
  of the streams) and the run's own SG, each compared with it on the other half. A held-out cosine
  near 0 even for the best linear SG says the future gradient is not predictable from the state
  by the paper's linear SG, whatever its learning rule.
"""
from __future__ import annotations

import torch

from ...tasks import EpisodeStream, window_errors
from ...unlock import batch_stats_only

# Probe streams are seeded with the run seed plus this, so they never coincide with the training stream.
PROBE_SEED_OFFSET = 2**31
SIGNAL_STREAMS = 256      # probe streams of the end-of-run measurement (half fit, half held out)
SIGNAL_BOUNDARIES = 8     # boundaries per stream, one window apart
SIGNAL_KEYS = ("signal_linear_cosine", "signal_sg_cosine", "signal_target_norm")
RIDGE = 1e-3              # ridge penalty, relative to the mean squared feature


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    na, nb = a.norm(), b.norm()
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def future_gradients(model, start: torch.Tensor, windows, discount: float) -> list[torch.Tensor]:
    """Per example, at the start of every window: the exact gradient of the losses of that window and
    all later ones in `windows` (window i after it weighted discount^i), w.r.t. the state there."""
    leaves, runs, state = [], [], start.detach()
    with batch_stats_only(model):
        for x, y, mask in windows:
            leaf = state.detach().requires_grad_()
            logits, _, end = model(x, leaf)
            leaves.append(leaf), runs.append((window_errors(logits, y, mask).sum(), end))
            state = end
        grads, carried = [], torch.zeros_like(start)
        for leaf, (loss, end) in zip(reversed(leaves), reversed(runs)):
            (g,) = torch.autograd.grad([loss, end], [leaf], [torch.ones_like(loss), discount * carried])
            carried = g.detach()
            grads.append(carried)
    return grads[::-1]


def _probe_windows(task, level, cfg, device, streams: int, count: int):
    stream = EpisodeStream(task, streams, PROBE_SEED_OFFSET + cfg.seed, device, desync=True, start_level=level)
    return [stream.window(cfg.T, level) for _ in range(count)]


def _states(model, start, windows) -> list[torch.Tensor]:
    """The state at the start of every window (no graph)."""
    states, state = [], start
    with torch.no_grad(), batch_stats_only(model):
        for x, _, _ in windows:
            states.append(state)
            state = model(x, state)[2]
    return states


def _sg(model, state):
    with torch.no_grad(), batch_stats_only(model):
        return model.synthetic_gradient(state)


def sg_probe(model, task, level: int, cfg, device) -> dict:
    """cosine of the SG at a probe boundary with the exact future gradient over probe_horizon windows,
    undiscounted and discounted, and |SG| / |exact|."""
    windows = _probe_windows(task, level, cfg, device, cfg.batch_size, 1 + cfg.probe_horizon)
    state = _states(model, model.initial_state(cfg.batch_size, device), windows[:2])[1]  # one window in
    exact = future_gradients(model, state, windows[1:], 1.0)[0]
    discounted = future_gradients(model, state, windows[1:], cfg.sg_discount)[0]
    sg = _sg(model, state)
    return {"cosine_exact": cosine(sg, exact), "cosine_discounted": cosine(sg, discounted),
            "norm_ratio_exact": float(sg.norm() / exact.norm()) if exact.norm() > 0 else None}


def linear_sg_signal(model, task, level: int, cfg, device) -> dict:
    """Held-out cosines with the exact γ-discounted future gradient (probe_horizon windows ahead) of
    the best linear SG on [h; c] and of the run's SG (None for bptt)."""
    n = SIGNAL_BOUNDARIES
    windows = _probe_windows(task, level, cfg, device, SIGNAL_STREAMS, n + cfg.probe_horizon)
    start = model.initial_state(SIGNAL_STREAMS, device)
    states = _states(model, start, windows)
    grads = future_gradients(model, states[0], windows, cfg.sg_discount)
    features = torch.stack(states[:n]).double()  # [n, streams, D]: boundaries with a full horizon ahead
    targets = torch.stack(grads[:n]).double()
    half = SIGNAL_STREAMS // 2
    held_y = targets[:, half:].reshape(-1, targets.shape[-1])
    out = {"signal_linear_cosine": heldout_linear_cosine(features, targets, half), "signal_sg_cosine": None,
           "signal_target_norm": float(held_y.norm(dim=1).mean())}
    if model.boundary is not None:
        sg = torch.stack([_sg(model, s) for s in states[:n]])[:, half:].reshape(-1, targets.shape[-1])
        out["signal_sg_cosine"] = cosine(sg, held_y)
    return out


def heldout_linear_cosine(features: torch.Tensor, targets: torch.Tensor, half: int) -> float:
    """Fit targets ~ [features; 1] W by ridge least squares on streams [:half] (dim 1), and return the
    cosine of its predictions with the targets on streams [half:]."""
    fit_x, fit_y = _with_bias(features[:, :half]), targets[:, :half].reshape(-1, targets.shape[-1])
    ridge = RIDGE * fit_x.pow(2).mean() * len(fit_x)
    eye = torch.eye(fit_x.shape[1], dtype=fit_x.dtype, device=fit_x.device)
    w = torch.linalg.solve(fit_x.T @ fit_x + ridge * eye, fit_x.T @ fit_y)
    held_x, held_y = _with_bias(features[:, half:]), targets[:, half:].reshape(-1, targets.shape[-1])
    return cosine(held_x @ w, held_y)


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1])
    return torch.cat([flat, torch.ones(len(flat), 1, dtype=flat.dtype, device=flat.device)], dim=1)
