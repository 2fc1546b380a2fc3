"""The synthetic-gradient mechanism: one DNI boundary, reused everywhere.

A `DNI` module sits on a layer's output h. In training it

  (a) asks its SG model for a synthetic gradient of the loss w.r.t. h and
      backpropagates it into the layer *at once* (`h.backward`), so the layer
      (and only that layer: its input was cut by the boundary below) has its
      gradient before anything above it has run;
  (b) hands the activation on, cut from the graph below;
  (c) when the gradient from above reaches the cut (the true loss gradient at
      the top, or what the next boundary's synthetic gradient backpropagated
      through the next layer) regresses the SG model towards it with an L2 loss.

Conventions (documented once, used by every experiment):

* The SG model predicts the *per-example* gradient d loss_i / d h_i, i.e. the
  gradient of the batch-summed loss. That keeps its targets independent of the
  batch size. The trainer's loss is the batch mean, so the injected gradient is
  `scale * sg / B` (B = h.shape[0]) and the target is `B * g_from_above`.
* SG loss reduction: `sg_loss_weight * mean((sg - target)**2)`, the mean over
  every element (batch and feature), so values are comparable across boundaries
  of different shapes. Its gradient reaches the SG parameters in the same
  backward pass that carries the gradient from above; no extra pass is run.
* In eval mode the boundary is the identity and the SG model is not evaluated.
* `exact=True` falls back to exact backprop through the boundary (baselines,
  warm-up); the SG model still learns from the true gradient if `learn_sg`.

All state is per instance: `last_sg_loss` holds the SG loss of the latest
backward, for logging.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sg_l2(sg: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The SG loss (mean squared error over all elements) and its gradient w.r.t. `sg`."""
    diff = sg - target
    return diff.pow(2).mean(), 2.0 * diff / diff.numel()


class _Cut(torch.autograd.Function):
    """Identity on `h`; in backward, trains the SG prediction towards the arriving gradient.

    `h` is either the layer output itself (exact mode: the gradient passes through)
    or a detached copy (DNI mode: the gradient stops here, the layer below already
    got its synthetic one).
    """

    @staticmethod
    def forward(ctx, h, sg, boundary):
        ctx.save_for_backward(sg)
        ctx.boundary = boundary
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad_out):
        (sg,) = ctx.saved_tensors
        boundary = ctx.boundary
        target = grad_out * grad_out.shape[0]  # batch-mean gradient -> per-example gradient
        loss, grad_sg = sg_l2(sg, target)
        boundary.last_sg_loss = loss.detach()
        grad_h = grad_out if ctx.needs_input_grad[0] else None
        grad_sg = grad_sg * boundary.sg_loss_weight if ctx.needs_input_grad[1] else None
        return grad_h, grad_sg, None


class DNI(nn.Module):
    """A decoupled neural interface placed after one layer.

    sg_model: maps (h, context) -> predicted per-example gradient, same shape as h.
    conditioned: feed the context (e.g. the one-hot label: cDNI) to the SG model.
    exact: pass the true gradient through instead of the synthetic one.
    learn_sg: train the SG model (in both modes). scale: multiplies the injected SG.
    """

    def __init__(self, sg_model: nn.Module, *, conditioned: bool = False, exact: bool = False,
                 learn_sg: bool = True, scale: float = 1.0, sg_loss_weight: float = 1.0):
        super().__init__()
        self.sg_model = sg_model
        self.conditioned = conditioned
        self.exact = exact
        self.learn_sg = learn_sg
        self.scale = scale
        self.sg_loss_weight = sg_loss_weight
        self.last_sg_loss: torch.Tensor | None = None

    def synthetic_gradient(self, h: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted per-example d loss / d h. Graph reaches the SG parameters, not h."""
        if self.conditioned and context is None:
            raise ValueError("this DNI is conditioned (cDNI): pass the context, e.g. the one-hot label")
        return self.sg_model(h.detach(), context if self.conditioned else None)

    def split(self, h: torch.Tensor, context: torch.Tensor | None = None):
        """(h_out, injected): the activation to hand on, and the gradient to backpropagate into h
        now (None: nothing to inject). `forward` injects it at once; the RNN trainer adds it to
        its window loss's backward instead, so the two reach the window in one pass."""
        if not self.training or (self.exact and not self.learn_sg):
            return h, None
        sg = self.synthetic_gradient(h, context)
        if not self.learn_sg:
            sg = sg.detach()
        if self.exact:
            return _Cut.apply(h, sg, self), None
        return _Cut.apply(h.detach(), sg, self), sg.detach() * (self.scale / h.shape[0])

    def forward(self, h: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h_out, injected = self.split(h, context)
        if injected is not None and h.requires_grad:  # update-unlock the layer below now
            h.backward(injected)
        return h_out

    def learn(self, h: torch.Tensor, context: torch.Tensor | None, grad_from_above: torch.Tensor) -> None:
        """Regress the SG model, evaluated now on (h, context), towards a gradient that arrived late
        for that activation (parallel workers: it belongs to an earlier batch). Same target and loss
        as when the gradient reaches the cut directly; accumulates into the SG parameters' .grad."""
        cut, _ = self.split(h.detach(), context)
        cut.backward(grad_from_above)


# ---------------------------------------------------------------- SG models
def _zero_last(layer: nn.Module) -> nn.Module:
    # Weights *and* bias: the initial synthetic gradient must be exactly 0.
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MLPSG(nn.Module):
    """SG model for vector activations: n hidden (linear, BN, ReLU) layers, then linear.

    hidden_layers=0 is the linear SG `g = W [h; c] + b`. out_dim (default: dim) lets the same
    network predict something of another size (the input models of complete unlock).
    """

    def __init__(self, dim: int, hidden_layers: int = 0, hidden_dim: int = 1024, context_dim: int = 0,
                 out_dim: int | None = None):
        super().__init__()
        layers, width = [], dim + context_dim
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
            width = hidden_dim
        layers.append(_zero_last(nn.Linear(width, out_dim or dim)))
        self.net = nn.Sequential(*layers)

    def forward(self, h, context=None):
        if context is not None:
            h = torch.cat([h, context.to(h.dtype)], dim=1)
        return self.net(h)


def conv_layers(width: int, hidden_layers: int, hidden_channels: int, kernel_size: int):
    """n hidden (conv, BN, ReLU) layers at constant resolution: (layers, output channels)."""
    layers = []
    for _ in range(hidden_layers):
        layers += [nn.Conv2d(width, hidden_channels, kernel_size, padding=kernel_size // 2),
                   nn.BatchNorm2d(hidden_channels), nn.ReLU()]
        width = hidden_channels
    return layers, width


def with_label_channels(x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """Feature maps with the context (one-hot label) appended as constant channels."""
    if context is None:
        return x
    n, _, height, width = x.shape
    return torch.cat([x, context.to(x.dtype).view(n, -1, 1, 1).expand(-1, -1, height, width)], dim=1)


class ConvSG(nn.Module):
    """SG model for feature maps: n hidden (conv, BN, ReLU) layers, then a conv.

    The context (one-hot label) is broadcast over space as extra input channels.
    """

    def __init__(self, channels: int, hidden_layers: int = 2, hidden_channels: int = 128,
                 kernel_size: int = 5, context_dim: int = 0):
        super().__init__()
        layers, width = conv_layers(channels + context_dim, hidden_layers, hidden_channels, kernel_size)
        layers.append(_zero_last(nn.Conv2d(width, channels, kernel_size, padding=kernel_size // 2)))
        self.net = nn.Sequential(*layers)

    def forward(self, h, context=None):
        return self.net(with_label_channels(h, context))


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels, num_classes).float()
