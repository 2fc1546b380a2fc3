"""Synthetic-gradient fidelity: how close is each SG to the exact gradient it stands in for?

A probe is a measurement only: it changes no parameter, optimizer state, BN running statistic or
random generator of the run, and its time is not counted as training time.

Feed-forward (`ff_fidelity`): on a fixed probe batch, the exact gradient of the mean cross-entropy
w.r.t. every boundary's activation comes from a full locked backward pass on a copy of the net
(`FeedForwardNet.exact_boundary_gradients`); each placed DNI's SG model is evaluated on the same
activations, in train mode as in training (batch statistics) but without updating its running ones.

RNN (`rnn_fidelity`): on a fixed probe stream, the state at a window boundary; the exact gradient
of the losses of the next `horizon` windows w.r.t. that state (one unroll of horizon x T steps,
no truncation), against the SG evaluated there. The SG's target is the gradient of *all* future
losses (bootstrapped), so a finite horizon is the reference the SG can be judged against.

Conventions: both gradients are per example (the SG models' convention: B x the gradient of the
batch-mean loss); the SG side is what the layer actually receives, `scale * sg`. Every number is
over the whole flattened probe batch (not a mean of per-example values, which would be dominated by
well-classified examples whose true gradient is ~0):
cosine = <sg, true> / (|sg| |true|) (0 when either is 0), rel_error = |sg - true| / |true|,
norm_ratio = |sg| / |true|.
"""
from __future__ import annotations

import torch

from .tasks import window_errors
from .unlock import batch_stats_only

# The probe stream's seed is the run seed plus this, so it never coincides with the training stream's.
PROBE_SEED_OFFSET = 2**31


def compare(sg: torch.Tensor, true: torch.Tensor) -> dict:
    """cosine, rel_error, norm_ratio of two per-example gradients, over the flattened batch."""
    sg, true = sg.flatten().double(), true.flatten().double()
    true_norm, sg_norm = true.norm(), sg.norm()
    cosine = float(sg @ true / (sg_norm * true_norm)) if sg_norm > 0 and true_norm > 0 else 0.0
    rel = float((sg - true).norm() / true_norm) if true_norm > 0 else None  # no exact gradient to compare
    ratio = float(sg_norm / true_norm) if true_norm > 0 else None
    return {"cosine": cosine, "rel_error": rel, "norm_ratio": ratio}


@torch.no_grad()
def _synthetic(boundary, h: torch.Tensor, context) -> torch.Tensor:
    with batch_stats_only(boundary.sg_model):
        return boundary.scale * boundary.synthetic_gradient(h, context)


def ff_fidelity(model, x: torch.Tensor, y: torch.Tensor) -> list[dict | None]:
    """Per boundary (bottom first): compare() of its SG with the exact gradient; None where no DNI sits."""
    true_grads = model.exact_boundary_gradients(x, y)  # on a copy: BN statistics stay put
    context = model._context(y)
    rows, h = [], x
    with torch.no_grad(), batch_stats_only(model.blocks):
        for block, boundary, placed, true in zip(model.blocks, model.boundaries, model.placed, true_grads):
            h = block(h)
            rows.append(compare(_synthetic(boundary, h, context), true * len(y)) if placed else None)
    return rows


def rnn_fidelity(model, task, level: int, T: int, horizon: int, batch_size: int, seed: int, device) -> dict:
    """compare() of the SG at a window boundary with the exact gradient of the next `horizon` windows'
    losses, on a fixed probe stream (seeded from `seed`) at curriculum `level`."""
    from .tasks import EpisodeStream

    stream = EpisodeStream(task, batch_size, PROBE_SEED_OFFSET + seed)
    x0, _, _ = (t.to(device) for t in stream.window(T, level))  # one window in: a state mid-stream
    x, y, mask = (t.to(device) for t in stream.window(horizon * T, level))
    with torch.no_grad(), batch_stats_only(model):
        _, _, state = model(x0, model.initial_state(batch_size, device))
    state = state.detach().requires_grad_()
    with batch_stats_only(model):
        logits, _, _ = model(x, state)
        loss = window_errors(logits, y, mask).sum() / batch_size  # the trainer's loss convention
        (true,) = torch.autograd.grad(loss, state)
    return compare(_synthetic(model.boundary, state.detach(), None), true * batch_size)
