"""Complete unlock ([DNI] Sec. 3.4; methods `unlock` and `cunlock`, the latter with every SG and
input model also given the one-hot label). Layers are numbered 0..L, L being the head. Layer
k >= 1 gets an input model I_k that predicts its input (the output of layer k-1) from the data x,
so no layer waits for the layers below to run forwards, nor (through the SG) for those above to
run backwards. One training step computes, in a single backward pass:

* the *update pass*: layer k runs on its predicted input I_k(x) (layer 0 on x itself), the DNI
  boundary on its output asks the SG model once for dL/dh there, and that synthetic gradient is
  backpropagated into the layer's parameters only (the predicted input is detached). The head's
  update is the true loss of the head on its predicted input. So a layer's update depends on x, y
  and its own models, never on the real activations of the layers below.
* the *real chain*, x -> layer 0 -> ... -> head with every boundary cut, run with each layer's
  parameters detached, so it carries gradient to activations only and no layer learns from it.
  It gives I_k its regression target (the real input of layer k, detached; L2 loss, mean over
  all elements) and gives each SG model its target: the same synthetic gradient the update pass
  injects, backpropagated through the layer above at its *real* input (the true loss gradient
  at the top boundary), exactly as in DNI. The SG model is evaluated once, on the layer's
  update-pass output; it is regressed towards the gradient at the real boundary.
* BatchNorm: both passes normalise with their own batch's statistics (train mode), but only the
  real chain updates the running statistics, because evaluation runs the real chain on them.
* At test time (eval mode) the net is the plain real forward chain; the input models are unused.

Layer 0 has no input model (its input is the data) and one forward serves both passes.
SG models are DNI's for `unlock` and cDNI's for `cunlock`. Input models (`InputSpec`): for the FCN
an MLP on the flattened image (default one hidden layer of 1024 units; 0 hidden layers = linear),
for the CNN conv layers at the image's resolution, average-pooled to the activation's size. They
end in a zero-initialised layer (weights and bias, like the SG models), so every predicted input
starts at exactly 0: layers above the first do not learn until their input model has.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .catalog import ARCHS, default_input_hidden
from .dni import MLPSG, conv_layers, with_label_channels, zero_last


@dataclass(frozen=True)
class InputSpec:
    """What input model each unlocked layer gets. None: one hidden layer of 1024 units (FCN) /
    128 channels (CNN); sgbench's choice, not taken from the paper."""
    hidden_layers: int | None = None
    hidden_dim: int | None = None


def make_input_model(arch: str, in_shape, out_shape, spec: InputSpec, ctx: int) -> nn.Module:
    """The input model of one unlocked layer: predicts its input (out_shape) from the data (in_shape)."""
    default_layers, default_dim = default_input_hidden(arch)
    hidden = default_layers if spec.hidden_layers is None else spec.hidden_layers
    if arch == "fcn":
        return MLPInput(math.prod(in_shape), out_shape[0], hidden, spec.hidden_dim or default_dim, context_dim=ctx)
    if arch == "cnn":
        return ConvInput(in_shape[0], out_shape, hidden, spec.hidden_dim or default_dim, context_dim=ctx)
    raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")


class MLPInput(MLPSG):
    """Predicts a vector activation from the flattened data (and the label): the SG models' MLP
    (n hidden linear-BN-ReLU layers, zero-initialised last layer) on [x; c], with its own output size."""

    def __init__(self, in_dim: int, out_dim: int, hidden_layers: int = 1, hidden_dim: int = 1024,
                 context_dim: int = 0):
        super().__init__(in_dim, hidden_layers, hidden_dim, context_dim, out_dim=out_dim)

    def forward(self, x, context=None):
        return super().forward(x.flatten(1), context)


class ConvInput(nn.Module):
    """Predicts a feature map (C, H, W) from the image (and the label, as constant channels):
    n hidden (conv, BN, ReLU) layers at the image's resolution, an average pool down to (H, W),
    then a zero-initialised conv to C channels."""

    def __init__(self, in_channels: int, out_shape, hidden_layers: int = 1, hidden_channels: int = 128,
                 kernel_size: int = 5, context_dim: int = 0):
        super().__init__()
        layers, width = conv_layers(in_channels + context_dim, hidden_layers, hidden_channels, kernel_size)
        layers += [nn.AdaptiveAvgPool2d(tuple(out_shape[1:])),
                   zero_last(nn.Conv2d(width, out_shape[0], kernel_size, padding=kernel_size // 2))]
        self.net = nn.Sequential(*layers)

    def forward(self, x, context=None):
        return self.net(with_label_channels(x, context))


@contextmanager
def batch_stats_only(module: nn.Module):
    """Train-mode BatchNorm that normalises with the batch's statistics but leaves the running
    ones alone: the update pass runs on predicted inputs, and evaluation must see real-input stats."""
    norms = [m for m in module.modules()
             if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def input_grad_only(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """module(h) with its parameters detached: gradient reaches h (and so the SG targets below) but
    never the parameters. BN running statistics are updated as usual."""
    return functional_call(module, {name: p.detach() for name, p in module.named_parameters()}, (h,))


def unlocked_losses(net, x, y):
    """(loss, objective) of one complete-unlock step of `net` (a FeedForwardNet); see the module docstring."""
    # `real` is the real chain's activation entering the next layer;
    # `objective` collects every term of the step's single backward pass.
    context = net._context(y)
    real, objective, input_losses = x, 0.0, []
    for k, (block, boundary) in enumerate(zip(net.blocks, net.boundaries)):
        if k == 0:  # its input is the data: one forward is both its update pass and the real chain
            out = real_out = block(x)
        else:
            with batch_stats_only(block):
                out = block(_predict_input(net, k, x, context, real, input_losses))
            real_out = input_grad_only(block, real)
        cut, injected = boundary.split(out, context)  # the SG, evaluated once, on the update-pass output
        objective = objective + (out * injected).sum()  # -> this layer's parameters
        if k > 0:  # -> through this layer at its real input: the target of the SG model below
            objective = objective + (real_out * injected).sum()
        # The real activation's value; the gradient arriving at it trains this boundary's SG via `cut`.
        real = real_out.detach() + (cut - cut.detach())
    predicted = _predict_input(net, len(net.blocks), x, context, real, input_losses)
    loss = F.cross_entropy(input_grad_only(net.head, real), y)  # the top boundary's SG target
    objective = objective + loss + F.cross_entropy(net.head(predicted), y) + sum(input_losses)
    net.last_input_losses = [v.detach() for v in input_losses]
    return loss, objective


def _predict_input(net, k: int, x, context, real, losses: list) -> torch.Tensor:
    """Layer k's predicted input, detached; appends I_k's L2 loss towards the real input to `losses`."""
    predicted = net.input_models[k - 1](x, context)
    losses.append(F.mse_loss(predicted, real.detach()))
    return predicted.detach()
