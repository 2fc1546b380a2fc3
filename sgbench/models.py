"""Feed-forward nets of the DNI paper, each a stack of blocks with a DNI after every block.

FCN: every hidden block is linear(256) -> BN -> ReLU.
CNN: every hidden block is conv(128, 5x5, same padding) -> BN -> ReLU -> pool, with a
3x3 max-pool (stride 2) after the first block and 3x3 average-pools after the rest.
The output layer is a linear classifier. "A DNI between every pair of layers" means
one boundary after each hidden block, the last one feeding the classifier.

Complete unlock ([DNI] Sec. 3.4; methods `unlock` and `cunlock`, the latter with every SG and
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

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .dni import DNI, ConvSG, MLPSG, _zero_last, conv_layers, one_hot, with_label_channels

METHODS = ("backprop", "dni", "cdni", "no_bprop", "unlock", "cunlock")
ARCHS = ("fcn", "cnn")
SG_METHODS = ("dni", "cdni", "unlock", "cunlock")     # a DNI boundary after every hidden block
CONDITIONED_METHODS = ("cdni", "cunlock")             # SG (and input) models also see the label
UNLOCK_METHODS = ("unlock", "cunlock")                # layers also train on predicted inputs
PLACEMENTS = ("every", "every_second", "middle")      # where DNI boundaries sit (dni / cdni)


def placed_boundaries(layers: int, placement: str) -> list[bool]:
    """Which of the `layers` boundaries (after hidden block i, bottom first; the last feeds the head)
    carry a DNI. every: all. every_second: after blocks 2, 4, ... (1-based), i.e. every second
    boundary counting from the bottom. middle: one, after block ceil(layers / 2) (0-based index
    (layers - 1) // 2), with as many hidden blocks below as above, give or take one ([Czarnecki et al.
    2017]'s single DNI in the middle of the stack). The other boundaries are exact backprop."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown dni_placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
    if placement == "every":
        return [True] * layers
    if placement == "every_second":
        return [i % 2 == 1 for i in range(layers)] if layers > 1 else [True]
    return [i == (layers - 1) // 2 for i in range(layers)]


@dataclass(frozen=True)
class SGSpec:
    """What SG model each boundary gets. hidden_layers=None: the paper's choice."""
    hidden_layers: int | None = None
    hidden_dim: int | None = None      # units (FCN) or channels (CNN); None: 1024 / 128
    loss_weight: float = 1.0
    scale: float = 1.0


@dataclass(frozen=True)
class InputSpec:
    """What input model each unlocked layer gets. None: one hidden layer of 1024 units (FCN) /
    128 channels (CNN); sgbench's choice, not taken from the paper."""
    hidden_layers: int | None = None
    hidden_dim: int | None = None


def paper_sg_hidden_layers(arch: str, method: str) -> int:
    # [DNI] supplement: FCN DNI uses a 2x1024 MLP SG, FCN cDNI a linear one on [h; label];
    # the CNN SG has 2 hidden conv layers (used for cDNI too, with label channels).
    return 0 if (arch == "fcn" and method in CONDITIONED_METHODS) else 2


def default_input_hidden(arch: str) -> tuple[int, int]:
    """(hidden layers, width) of the input models when not configured."""
    return (1, 1024) if arch == "fcn" else (1, 128)


def fcn_blocks(in_shape, layers: int, width: int = 256) -> list[nn.Module]:
    in_dim = in_shape[0] * in_shape[1] * in_shape[2]
    blocks = [nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width), nn.BatchNorm1d(width), nn.ReLU())]
    blocks += [nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU()) for _ in range(layers - 1)]
    return blocks


def cnn_blocks(in_shape, layers: int, channels: int = 128) -> list[nn.Module]:
    blocks, c_in = [], in_shape[0]
    for i in range(layers):
        pool = nn.MaxPool2d(3, stride=2, padding=1) if i == 0 else nn.AvgPool2d(3, stride=2, padding=1)
        blocks.append(nn.Sequential(nn.Conv2d(c_in, channels, 5, padding=2), nn.BatchNorm2d(channels), nn.ReLU(), pool))
        c_in = channels
    return blocks


# ---------------------------------------------------------------- input models (complete unlock)
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
                   _zero_last(nn.Conv2d(width, out_shape[0], kernel_size, padding=kernel_size // 2))]
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


class FeedForwardNet(nn.Module):
    """Blocks, one DNI after each (none for backprop / no_bprop), then a linear head; for the
    unlock methods also one input model per layer above the first (see the module docstring).

    placement (dni / cdni only; see `placed_boundaries`): a boundary without a DNI is still a `DNI`
    module, so boundaries keep their indices, but one with no SG model (`nn.Identity`, no
    parameters) in exact mode that does not learn: its forward is the identity, i.e. exact backprop."""

    def __init__(self, arch: str, layers: int, method: str, in_shape, num_classes: int = 10,
                 sg: SGSpec = SGSpec(), inputs: InputSpec = InputSpec(), placement: str = "every"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.method, self.num_classes = method, num_classes
        make_blocks = fcn_blocks if arch == "fcn" else cnn_blocks
        self.blocks = nn.ModuleList(make_blocks(in_shape, layers))
        with torch.no_grad():  # shapes of each block's output, for the SG models and the head
            shapes, h = [], torch.zeros(2, *in_shape)
            for block in self.blocks.eval():
                h = block(h)
                shapes.append(tuple(h.shape[1:]))
        self.blocks.train()
        self.block_shapes = shapes  # per-example output shape of each block
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shapes[-1]), num_classes))
        self.boundaries = self.input_models = None
        self.placed = placed_boundaries(layers, placement) if method in SG_METHODS else []
        if placement != "every" and method not in ("dni", "cdni"):
            raise ValueError(f"dni_placement {placement!r} needs method dni or cdni, not {method!r}")
        if method in SG_METHODS:
            self.boundaries = nn.ModuleList(
                self._make_dni(arch, shape, sg) if on else DNI(nn.Identity(), exact=True, learn_sg=False)
                for shape, on in zip(shapes, self.placed))
        if method in UNLOCK_METHODS:  # input_models[k] predicts the input of layer k + 1
            self.input_models = nn.ModuleList(self._make_input_model(arch, in_shape, shape, inputs) for shape in shapes)
        if method == "no_bprop":  # the paper's lower baseline: only the last layer learns
            self.blocks.requires_grad_(False)
        self.last_input_losses: list[torch.Tensor] = []

    @property
    def conditioned(self) -> bool:
        return self.method in CONDITIONED_METHODS

    def _make_dni(self, arch: str, shape, sg: SGSpec) -> DNI:
        ctx = self.num_classes if self.conditioned else 0
        hidden = paper_sg_hidden_layers(arch, self.method) if sg.hidden_layers is None else sg.hidden_layers
        if arch == "fcn":
            model = MLPSG(shape[0], hidden, sg.hidden_dim or 1024, context_dim=ctx)
        else:
            model = ConvSG(shape[0], hidden, sg.hidden_dim or 128, context_dim=ctx)
        return DNI(model, conditioned=self.conditioned, scale=sg.scale, sg_loss_weight=sg.loss_weight)

    def _make_input_model(self, arch: str, in_shape, out_shape, spec: InputSpec) -> nn.Module:
        ctx = self.num_classes if self.conditioned else 0
        default_layers, default_dim = default_input_hidden(arch)
        hidden = default_layers if spec.hidden_layers is None else spec.hidden_layers
        if arch == "fcn":
            return MLPInput(math.prod(in_shape), out_shape[0], hidden, spec.hidden_dim or default_dim, context_dim=ctx)
        return ConvInput(in_shape[0], out_shape, hidden, spec.hidden_dim or default_dim, context_dim=ctx)

    def _context(self, y: torch.Tensor | None) -> torch.Tensor | None:
        return one_hot(y, self.num_classes) if (y is not None and self.conditioned) else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits. In eval mode every method is the plain real forward chain."""
        if self.training and self.method in UNLOCK_METHODS:
            raise RuntimeError(f"{self.method} trains through training_losses(x, y); forward() is for evaluation")
        context = self._context(y)
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if self.boundaries is not None:
                h = self.boundaries[i](h, context)
        return self.head(h)

    def training_losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, objective): the mean cross-entropy of the real forward chain (what gets logged),
        and what to backpropagate for one update of every layer and SG / input model."""
        if self.method in UNLOCK_METHODS:
            return self._unlocked_losses(x, y)
        loss = F.cross_entropy(self(x, y), y)
        return loss, loss

    def _unlocked_losses(self, x, y):
        # See the module docstring. `real` is the real chain's activation entering the next layer;
        # `objective` collects every term of the step's single backward pass.
        context = self._context(y)
        real, objective, input_losses = x, 0.0, []
        for k, (block, boundary) in enumerate(zip(self.blocks, self.boundaries)):
            if k == 0:  # its input is the data: one forward is both its update pass and the real chain
                out = real_out = block(x)
            else:
                with batch_stats_only(block):
                    out = block(self._predict_input(k, x, context, real, input_losses))
                real_out = input_grad_only(block, real)
            cut, injected = boundary.split(out, context)  # the SG, evaluated once, on the update-pass output
            objective = objective + (out * injected).sum()  # -> this layer's parameters
            if k > 0:  # -> through this layer at its real input: the target of the SG model below
                objective = objective + (real_out * injected).sum()
            # The real activation's value; the gradient arriving at it trains this boundary's SG via `cut`.
            real = real_out.detach() + (cut - cut.detach())
        predicted = self._predict_input(len(self.blocks), x, context, real, input_losses)
        loss = F.cross_entropy(input_grad_only(self.head, real), y)  # the top boundary's SG target
        objective = objective + loss + F.cross_entropy(self.head(predicted), y) + sum(input_losses)
        self.last_input_losses = [v.detach() for v in input_losses]
        return loss, objective

    def _predict_input(self, k: int, x, context, real, losses: list) -> torch.Tensor:
        """Layer k's predicted input, detached; appends I_k's L2 loss towards the real input to `losses`."""
        predicted = self.input_models[k - 1](x, context)
        losses.append(F.mse_loss(predicted, real.detach()))
        return predicted.detach()

    def exact_boundary_gradients(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """d(mean cross-entropy)/d(output of each block) by plain backprop through every block: the
        reference a synthetic gradient is judged against. Runs on a copy, so BN statistics stay put."""
        net = copy.deepcopy(self).requires_grad_(True)
        outs, h = [], x
        for block in net.blocks:
            h = block(h)
            h.retain_grad()
            outs.append(h)
        F.cross_entropy(net.head(h), y).backward()
        return [o.grad.detach() for o in outs]

    def set_exact(self, exact: bool) -> None:
        """Warm-up: every placed DNI passes the true gradient (still training its SG) or injects its SG."""
        for boundary, on in zip(self.boundaries or [], self.placed):
            if on:
                boundary.exact = exact

    def model_parameters(self):
        """Parameters of the network itself (blocks and head), not of the SG or input models."""
        return [p for m in (self.blocks, self.head) for p in m.parameters()]

    def trainable_parameters(self):
        """What the optimizer updates: the network's learnable parameters, every SG and input model's."""
        return [p for p in self.model_parameters() if p.requires_grad] + self.sg_parameters() + self.input_parameters()

    def sg_parameters(self):
        return [] if self.boundaries is None else list(self.boundaries.parameters())

    def input_parameters(self):
        return [] if self.input_models is None else list(self.input_models.parameters())

    def layer_parameters(self) -> list[list[nn.Parameter]]:
        """Per layer (blocks bottom first, then the head): its parameters and those of its SG model
        (on its output) and input model (predicting its input), i.e. all that its update moves."""
        groups = [list(m.parameters()) for m in (*self.blocks, self.head)]
        for k, boundary in enumerate(self.boundaries or []):
            groups[k] += list(boundary.parameters())
        for k, model in enumerate(self.input_models or []):
            groups[k + 1] += list(model.parameters())
        return groups

    def sg_losses(self) -> list[float | None]:
        if self.boundaries is None:
            return []
        return [None if b.last_sg_loss is None else float(b.last_sg_loss) for b in self.boundaries]
