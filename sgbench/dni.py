"""The synthetic-gradient mechanism: one DNI boundary, reused everywhere (and usable in your models).

A `DNI` module sits on a layer's output h. In training it

  (a) asks its SG model for a synthetic gradient of the loss w.r.t. h and sends it into the
      layer below instead of the true gradient;
  (b) hands the activation on unchanged;
  (c) when the gradient from above reaches the boundary (the true loss gradient at the top, or
      what the next boundary's synthetic gradient backpropagated through the next layer),
      regresses the SG model towards it with its learning rule (default: `BootstrapL2`).

When (a) happens is the `inject` setting:

* "backward" (default): the synthetic gradient enters h during the loss's own backward pass, as
  one more term of a single `loss.backward()`. Nothing is written into `.grad` during the forward
  pass, so a plain training loop works whatever the order of `zero_grad()` and the forward, and a
  graph that reaches h twice (a skip connection around the DNI) gets both gradients in one pass.
  In one process this is the same update as "now", bit for bit.
* "now": `h.backward(sg)` runs inside the forward pass, so the layer below has its gradient before
  anything above it has run: what decoupled workers need (sgbench's parallel family), where no
  loss is ever backpropagated through the stage. Then call `zero_grad()` *before* the forward:
  zeroing after it would wipe the synthetic gradient.

Conventions (documented once, used by every experiment):

* The SG model predicts the *per-example* gradient d loss_i / d h_i, i.e. the gradient of the
  batch-summed loss. That keeps its targets independent of the batch size. The trainer's loss is
  the batch mean, so the injected gradient is `scale * sg / B` (B = h.shape[0], the first
  dimension of any activation shape: [B, D], [B, C, H, W], [B, T, D]) and the target is
  `B * g_from_above`.
* SG loss (BootstrapL2): `sg_loss_weight * mean((sg - target)**2)`, the mean over every element, so
  values are comparable across boundaries of different shapes. Its gradient reaches the SG
  parameters in the same backward pass that carries the gradient from above; no extra pass runs.
* In eval mode the boundary is the identity and the SG model is not evaluated.
* `exact=True` passes the true gradient through instead (baselines, warm-up); the SG model still
  learns from it if `learn_sg`.
* The SG model is any `nn.Module` called as `sg_model(h)`, or `sg_model(h, context)` when
  `conditioned` (cDNI: e.g. the one-hot label). Its output must have h's shape. `zero_last` gives
  its last layer zero weights and bias, so the first synthetic gradients are exactly 0.

All state is per instance: `last_sg_loss` holds the SG loss of the latest backward, for logging.

Example (your own model):

    from sgbench import DNI, MLPSG
    dni = DNI(MLPSG(256))                       # a linear SG, zero at the start
    h = dni(layer1(x)); loss = loss_fn(layer2(h), y)
    opt.zero_grad(); loss.backward(); opt.step()   # layer1 learns from the SG, the SG from layer2
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INJECT_MODES = ("backward", "now")


def sg_l2(sg: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The SG loss (mean squared error over all elements) and its gradient w.r.t. `sg`."""
    diff = sg - target
    return diff.pow(2).mean(), 2.0 * diff / diff.numel()


class BootstrapL2:
    """The SG learning rule of [DNI]: regress the synthetic gradient towards the gradient that arrives
    at the boundary (itself bootstrapped from the SGs above), with an L2 loss. A rule is any object
    with these two methods; the RNN family adds others (e.g. BP(lambda))."""

    def target(self, grad_from_above: torch.Tensor) -> torch.Tensor:
        """The per-example gradient the SG should predict: the batch-mean loss's gradient times B."""
        return grad_from_above * grad_from_above.shape[0]

    def loss(self, sg: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(SG loss, its gradient w.r.t. sg)."""
        return sg_l2(sg, target)


def _learn_at_cut(boundary: "DNI", sg: torch.Tensor, grad_out: torch.Tensor, wants_grad: bool):
    """The SG model's gradient from the gradient arriving at the boundary (and the loss, for logging)."""
    # The SG regression in fp32 whatever the run's precision (issue #26): under bf16 autocast the SG's
    # prediction and the arriving gradient are bfloat16, whose 8-bit mantissa cannot resolve the small
    # late-training residuals (SG losses of 1e-6); so target, loss and its gradient are computed in
    # float32 (a no-op for an fp32 run) and the gradient handed back in the prediction's dtype.
    loss, grad_sg = boundary.rule.loss(sg.float(), boundary.rule.target(grad_out.float()))
    boundary.last_sg_loss = loss.detach()
    return (grad_sg * boundary.sg_loss_weight).to(sg.dtype) if wants_grad else None


class _Boundary(torch.autograd.Function):
    """Identity on `h` in the forward pass; keeps the SG prediction for the backward."""

    @staticmethod
    def forward(ctx, h, sg, boundary):
        ctx.save_for_backward(sg)
        ctx.boundary = boundary
        return h.view_as(h)


class _Cut(_Boundary):
    """In backward, trains the SG prediction towards the arriving gradient and passes that gradient on.

    `h` is either the layer output itself (exact mode: the gradient passes through) or a detached
    copy (inject "now": the gradient stops here, the layer below already got its synthetic one).
    """

    @staticmethod
    def backward(ctx, grad_out):
        (sg,) = ctx.saved_tensors
        grad_h = grad_out if ctx.needs_input_grad[0] else None
        return grad_h, _learn_at_cut(ctx.boundary, sg, grad_out, ctx.needs_input_grad[1]), None


class _Inject(_Boundary):
    """In backward, sends the synthetic gradient into h in place of the arriving one, and trains the SG
    prediction towards the arriving one (inject "backward")."""

    @staticmethod
    def backward(ctx, grad_out):
        (sg,) = ctx.saved_tensors
        boundary = ctx.boundary
        grad_h = sg.detach() * (boundary.scale / sg.shape[0]) if ctx.needs_input_grad[0] else None
        return grad_h, _learn_at_cut(boundary, sg, grad_out, ctx.needs_input_grad[1]), None


class DNI(nn.Module):
    """A decoupled neural interface placed after one layer.

    sg_model: any module mapping h (or (h, context) when conditioned) to a tensor of h's shape.
    conditioned: feed the context (e.g. the one-hot label: cDNI) to the SG model.
    exact: pass the true gradient through instead of the synthetic one.
    learn_sg: train the SG model (in both modes). scale: multiplies the injected SG.
    rule: the SG learning rule (target and loss); default BootstrapL2().
    inject: "backward" (default) or "now"; see the module docstring.
    """

    def __init__(self, sg_model: nn.Module, *, conditioned: bool = False, exact: bool = False,
                 learn_sg: bool = True, scale: float = 1.0, sg_loss_weight: float = 1.0, rule=None,
                 inject: str = "backward"):
        super().__init__()
        if inject not in INJECT_MODES:
            raise ValueError(f"unknown inject mode {inject!r}; choose one of {', '.join(INJECT_MODES)}")
        context_dim = getattr(sg_model, "context_dim", None)
        if context_dim is not None and bool(context_dim) != conditioned:
            raise ValueError(
                f"the SG model takes a context of size {context_dim} but conditioned={conditioned}: "
                + ("pass conditioned=True (cDNI) or build the SG model with context_dim=0" if context_dim else
                   "build the SG model with context_dim = the context's size, or pass conditioned=False"))
        self.sg_model = sg_model
        self.conditioned = conditioned
        self.exact = exact
        self.learn_sg = learn_sg
        self.scale = scale
        self.sg_loss_weight = sg_loss_weight
        self.rule = BootstrapL2() if rule is None else rule
        self.inject = inject
        self.last_sg_loss: torch.Tensor | None = None

    def synthetic_gradient(self, h: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted per-example d loss / d h. Graph reaches the SG parameters, not h."""
        if self.conditioned:
            if context is None:
                raise ValueError("this DNI is conditioned (cDNI): pass the context, e.g. the one-hot label")
            sg = self.sg_model(h.detach(), context)
        else:
            sg = self.sg_model(h.detach())
        if sg.shape != h.shape:
            raise ValueError(f"the SG model returned shape {tuple(sg.shape)} for an activation of shape "
                             f"{tuple(h.shape)}: it must predict a gradient of the activation's shape")
        return sg

    def split(self, h: torch.Tensor, context: torch.Tensor | None = None):
        """(h_out, injected): the activation to hand on, cut from h, and the gradient to backpropagate
        into h (None: nothing to inject). For trainers that run that backward themselves, e.g. the RNN
        window (`torch.autograd.backward([loss, h], [None, injected])`) or complete unlock."""
        if not self.training or (self.exact and not self.learn_sg):
            return h, None
        sg = self.synthetic_gradient(h, context)
        if not self.learn_sg:
            sg = sg.detach()
        if self.exact:
            return _Cut.apply(h, sg, self), None
        return _Cut.apply(h.detach(), sg, self), sg.detach() * (self.scale / h.shape[0])

    def forward(self, h: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.inject == "backward" and self.training and not self.exact:
            sg = self.synthetic_gradient(h, context)
            return _Inject.apply(h, sg if self.learn_sg else sg.detach(), self)
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
def zero_last(layer: nn.Module) -> nn.Module:
    """Zero a layer's weight *and* bias (returns it): an SG model ending in it predicts exactly 0 at first,
    so nothing learns from an untrained SG."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
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
        self.context_dim = context_dim
        layers, width = [], dim + context_dim
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
            width = hidden_dim
        layers.append(zero_last(nn.Linear(width, out_dim or dim)))
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
        self.context_dim = context_dim
        layers, width = conv_layers(channels + context_dim, hidden_layers, hidden_channels, kernel_size)
        layers.append(zero_last(nn.Conv2d(width, channels, kernel_size, padding=kernel_size // 2)))
        self.net = nn.Sequential(*layers)

    def forward(self, h, context=None):
        return self.net(with_label_channels(h, context))


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels, num_classes).float()


# ---------------------------------------------------------------- SG learning rules for recurrent boundaries
class BPLambda(BootstrapL2):
    """BP(λ) ([BPλ], Pemberton & Costa 2024) for the synthetic gradient at a recurrent state, in the
    forward view: the SG at window boundary k is regressed (L2, per example) towards the λ-return

        G_k = g_{k+1} + γ J_{k+1}^T [ (1 - λ) SG(s_{k+1}) + λ G_{k+1} ],

    g_{k+1}: the gradient of window k+1's losses w.r.t. its start state s_k; J_{k+1}: the Jacobian of
    window k+1's end state w.r.t. s_k; γ (`discount`): a per-window discount. λ = 0 is [DNI]'s
    bootstrapped target (one window, then the SG); λ = 1 the γ-discounted Monte-Carlo gradient of every
    later loss. The recursion is cut `horizon` windows ahead, where G is the SG there (the truncated
    λ-return). [BPλ] reaches its target online with eligibility traces the size of the state times the
    SG's parameters; this form instead knows a boundary's target `horizon` windows later and computes it
    by re-running those windows with the current parameters (`lambda_return`).

    As a rule of a plain `DNI` cut (a feed-forward boundary: one step, nothing beyond it) its target and
    loss are BootstrapL2's, so it plugs in wherever a rule does; the RNN trainer calls `lambda_return`.
    """

    def __init__(self, lam: float = 0.5, discount: float = 1.0, horizon: int = 1):
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"BP(λ): lam must be in [0, 1], got {lam}")
        if horizon < 1 or discount < 0:
            raise ValueError(f"BP(λ): horizon must be >= 1 and discount >= 0, got {horizon}, {discount}")
        self.lam, self.discount, self.horizon = lam, discount, horizon

    def lambda_return(self, window_loss, synthetic, start: torch.Tensor, windows) -> torch.Tensor:
        """G at `start` (per example, detached) from the windows that follow it.

        window_loss(start, window) -> (batch-summed loss of the window run from `start`, its end state),
        differentiable w.r.t. `start`. synthetic(state) -> the SG there (per example). windows: the
        `horizon` windows after `start`, in order; fewer means a finite sequence ends after the last one
        (nothing follows: no SG there)."""
        leaves, runs, state = [], [], start.detach()
        for window in windows:
            leaf = state.detach().requires_grad_()
            loss, end = window_loss(leaf, window)
            leaves.append(leaf), runs.append((loss, end))
            state = end
        terminal = len(windows) < self.horizon
        g = None
        for leaf, (loss, end) in zip(reversed(leaves), reversed(runs)):
            if g is None:  # the last window: the SG at its end stands for everything after it
                carried = torch.zeros_like(end) if terminal else synthetic(end.detach()).detach()
            else:
                carried = (1.0 - self.lam) * synthetic(end.detach()).detach() + self.lam * g
            (g,) = torch.autograd.grad([loss, end], [leaf], [torch.ones_like(loss), self.discount * carried])
            g = g.detach()
        return g
