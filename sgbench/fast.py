"""The feed-forward training step at GPU speed (issue #17).

A GPU step of these small nets is bound by Python and kernel launches, not arithmetic. The forms here
keep the update of the run's step (`train_step`: one `backward` per step, every DNI's synthetic
gradient entering its layer inside that pass, sgbench.dni's default `inject="backward"`) and take the
host out of the loop:

* `fused`: device-resident batches (`DeviceBatches`). The permutation of the run's `BatchStream`
  (same generator, same order, so a fused run sees the eager run's batches) is copied to the device
  once per epoch and each batch is gathered there, instead of a per-step copy of the batch's indices
  from host memory, which on CUDA waits for the steps queued before it. The run's loop already sums
  its losses on the device and reads them at evaluation only; the step adds no `.item()`.
* `captured` (CUDA only): that step (batch gather, forward, backward, a capturable Adam whose learning
  rate is a device tensor) recorded once as a CUDA graph and replayed (`CapturedStep`): one graph
  launch per step instead of hundreds of kernel launches.
* batched seeds (`StackedFCN`): S seeds of one FCN config as one computation. Each weight is stacked
  to (S, ...), each linear layer is one batched matrix product and each batch norm one over S x C
  channels; Adam is elementwise, so each seed's update is its own run's.

`step` of a feed-forward run (FFConfig.step): eager (the default: the step as it always ran, so every
existing number stays bit-identical), fused, captured, or auto (eager on a CPU; on CUDA captured where
the run allows it, else fused).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import catalog, optim, runtime
from .catalog import STEP_MODES
from .data import as_input
from .dni import DNI, MLPSG, one_hot

CAPTURE_WARMUP_STEPS = 3  # eager steps on a side stream before capture (cuBLAS/cuDNN handles, Adam state)


# ---------------------------------------------------------------- step modes
def capture_blockers(cfg) -> list[str]:
    """Why this run's step cannot be one static CUDA graph (empty: it can). Host-side decisions
    that change the step's graph from one step to the next cannot be replayed."""
    reasons = []
    if cfg.update_prob < 1 or cfg.update_periods:
        reasons.append("asynchronous layer updates (update_prob < 1 or update_periods) drop gradients per step")
    if cfg.warmup:
        reasons.append("warmup switches the boundaries from exact to synthetic mid-run")
    return reasons


def resolve_step(mode: str, cfg, device: torch.device) -> str:
    """The step mode to run: `auto` becomes eager on a CPU, captured on CUDA where the run allows it,
    else fused. Raises ValueError naming the fix for a mode this run or device cannot use."""
    if mode not in STEP_MODES:
        raise ValueError(f"unknown step {mode!r}; choose one of {', '.join(STEP_MODES)}")
    if mode == "auto":
        if device.type != "cuda":
            return "eager"
        return "fused" if capture_blockers(cfg) else "captured"
    if mode == "captured":
        if device.type != "cuda":
            raise ValueError(f"step captured needs a CUDA device (got {device}); use step fused or auto")
        blockers = capture_blockers(cfg)
        if blockers:
            raise ValueError(f"step captured cannot replay this run: {'; '.join(blockers)}; use step fused or auto")
    return mode


def sync(device: torch.device) -> None:
    """Wait for the work queued on a GPU (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(params, lr: float, mode: str, device: torch.device, adam: str = "for-loop") -> torch.optim.Adam:
    """Adam as the run uses it (`adam`, FFConfig.adam):

    * for-loop: sgbench.optim.Adam, torch's single-tensor numbers bit for bit with a CPU step that keeps
      its arrays in the cache (every committed run's);
    * fused: torch's fused kernel (`fused=True`), one pass over each tensor instead of seven. The same
      update, rounded differently (its own order of the same operations), so a run's numbers differ
      from the for-loop run's in the last bits and then drift as any two roundings do; about 2.5x
      less time in Adam on a CPU, which is 10-15 % of a DNI step with the paper's 2 x 1024 SGs
      (benchmarks/README.md). Parity with for-loop: results/reference/adam-parity/.

    Captured: capturable (its step count on the device) with the learning rate a device tensor, so the LR
    schedule's milestones reach the replayed graph (`fill_`); for-loop is torch's capturable foreach form
    there (as the captured step always ran), fused its fused kernel."""
    if adam not in catalog.ADAM_IMPLS:
        raise ValueError(f"unknown adam {adam!r}; choose one of {', '.join(catalog.ADAM_IMPLS)}")
    fused = adam == "fused"
    if mode == "captured":
        return torch.optim.Adam(params, lr=torch.tensor(lr, device=device), capturable=True, foreach=not fused,
                                fused=fused)
    return torch.optim.Adam(params, lr=lr, fused=True) if fused else optim.Adam(params, lr=lr)


# ---------------------------------------------------------------- data on the device
class DeviceBatches:
    """The batches of a BatchStream, in its order, gathered on the device.

    The host keeps the stream's state (generator, permutation, position: what a checkpoint saves);
    `advance` moves it on by one batch, and at an epoch's end draws the next permutation (as
    `BatchStream.next` does) and copies it to the device: one transfer per epoch. `gather` reads
    the batch at the device's copy of the position and moves that on; it launches kernels only
    (no host value), so a CUDA graph can hold it."""

    def __init__(self, stream, x_u8: torch.Tensor, y: torch.Tensor):
        self.stream, self.x, self.y = stream, x_u8, y
        device = x_u8.device
        self.offsets = torch.arange(stream.batch_size, device=device)
        self.perm = stream.perm.to(device)
        self.pos = torch.tensor(stream.pos, device=device)

    def advance(self) -> None:
        s = self.stream
        if s.pos + s.batch_size > s.n:
            s.perm, s.pos = torch.randperm(s.n, generator=s.generator), 0
            # pinned, so the copy does not wait for the steps queued before it (the host allocator
            # keeps the pinned block until the copy has run)
            self.perm.copy_(s.perm.pin_memory() if self.perm.is_cuda else s.perm, non_blocking=True)
            self.pos.zero_()
        s.pos += s.batch_size

    def gather(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.perm.index_select(0, self.pos + self.offsets)
        self.pos.add_(self.stream.batch_size)
        return as_input(self.x.index_select(0, idx)), self.y.index_select(0, idx)


# ---------------------------------------------------------------- the step of a run
class CapturedStep:
    """A step body run as a CUDA graph: its first CAPTURE_WARMUP_STEPS calls run it eagerly on a side
    stream (as capture requires: library handles, the optimizer's state, the autograd engine's
    streams are made there), the next records it and runs the recording, every later call replays.
    Warm-up and captured calls are real steps. The body must read only device tensors that stay in
    place (static buffers) and return device tensors, which replays overwrite in place."""

    def __init__(self, body: Callable[[], torch.Tensor], warmup: int = CAPTURE_WARMUP_STEPS):
        self.body, self.warmup, self.calls = body, warmup, 0
        self.graph, self.out = None, None

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return self.out
        if self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.body()
            torch.cuda.current_stream().wait_stream(side)
            return out
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self.body()
        self.graph.replay()
        return self.out


class Stepper:
    """One training step of a run per call (the batch, then `step_fn(model, opt, x, y, update)`, the
    run's `train_step`); returns the loss, a device tensor.

    eager: the batch indexed from the host, as the run's loop always did (bit-identical); fused: the
    batch gathered on the device; captured: the fused step as a CUDA graph (`CapturedStep`)."""

    def __init__(self, mode: str, model, opt, stream, train_x, train_y, schedule, step_fn: Callable,
                 precision: str = "fp32"):
        if mode not in ("eager", "fused", "captured"):
            raise ValueError(f"Stepper runs eager, fused or captured (resolve {mode!r} with resolve_step first)")
        self.mode, self.model, self.opt, self.schedule, self.step_fn = mode, model, opt, schedule, step_fn
        self.precision = precision  # handed to step_fn, which runs its forward under runtime.autocast
        self.stream, self.train_x, self.train_y = stream, train_x, train_y
        self.batches = DeviceBatches(stream, train_x, train_y) if mode != "eager" else None
        self.captured = CapturedStep(self._body) if mode == "captured" else None

    def __call__(self, step: int) -> torch.Tensor:
        """Train step `step` (1-based)."""
        update = self.schedule.mask(step)
        if self.mode == "eager":
            idx = self.stream.next().to(self.train_x.device)
            return self.step_fn(self.model, self.opt, as_input(self.train_x[idx]), self.train_y[idx], update,
                                precision=self.precision)
        self.batches.advance()
        return self._body(update) if self.captured is None else self.captured()

    def _body(self, update=None) -> torch.Tensor:
        x, y = self.batches.gather()
        return self.step_fn(self.model, self.opt, x, y, update, precision=self.precision)


# ---------------------------------------------------------------- batched seeds (FCN)
STACKED_METHODS = catalog.STACKED_METHODS  # the catalog rows marked stackable


class StackedLinear(nn.Module):
    """S linear layers as one batched product: x (S, B, in) -> (S, B, out). weight (S, out, in)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())

    def forward(self, x):
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class StackedBatchNorm1d(nn.Module):
    """S BatchNorm1d layers of C channels as one batch norm over S * C channels (same statistics,
    same running-stat updates as each layer on its own seed's batch)."""

    def __init__(self, layers: list[nn.BatchNorm1d]):
        super().__init__()
        first = layers[0]
        self.eps, self.momentum = first.eps, first.momentum
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, torch.stack([getattr(m, name) for m in layers]).clone())

    def forward(self, x):  # x (S, B, C)
        s, b, c = x.shape
        if self.training:
            self.num_batches_tracked.add_(1)
        flat = x.transpose(0, 1).reshape(b, s * c)
        out = F.batch_norm(flat, self.running_mean.view(-1), self.running_var.view(-1), self.weight.view(-1),
                           self.bias.view(-1), self.training, self.momentum, self.eps)
        return out.view(b, s, c).transpose(0, 1)


class _StackedInject(torch.autograd.Function):
    """sgbench.dni's inject-in-backward boundary for S seeds at once: identity on h (S, B, ...); in
    backward h gets each seed's synthetic gradient (scale * sg / B) in place of the arriving one, and
    each seed's SG learns from its own arriving gradient through the boundary's rule (sgbench.dni:
    its target and loss, applied to each seed's slice as to a single run's boundary)."""

    @staticmethod
    def forward(ctx, h, sg, boundary):
        ctx.save_for_backward(sg)
        ctx.boundary = boundary
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad_out):
        (sg,) = ctx.saved_tensors
        boundary, rule = ctx.boundary, ctx.boundary.rule
        # the SG regression in fp32 under any precision, as sgbench.dni._learn_at_cut (why: there)
        loss, grad_sg = torch.func.vmap(lambda s, g: rule.loss(s, rule.target(g)))(sg.float(), grad_out.float())
        boundary.last_sg_loss = loss.detach()
        grad_h = sg.detach() * (boundary.scale / grad_out.shape[1])
        return grad_h, (grad_sg * boundary.sg_loss_weight).to(sg.dtype), None


class StackedDNI(nn.Module):
    """S DNI boundaries (synthetic mode, learning their SG) of S seeds: see sgbench.dni.DNI. Their rule
    is the first boundary's (a seed group is one config: every seed's boundary has the same rule)."""

    def __init__(self, boundaries: list[DNI]):
        super().__init__()
        first = boundaries[0]
        self.sg_model = stack_modules([b.sg_model for b in boundaries])
        self.conditioned, self.scale, self.sg_loss_weight = first.conditioned, first.scale, first.sg_loss_weight
        self.rule = first.rule
        self.last_sg_loss = None

    def forward(self, h, context=None):
        sg = self.sg_model(h.detach(), context if self.conditioned else None)
        return _StackedInject.apply(h, sg, self)


class StackedMLPSG(nn.Module):
    def __init__(self, models: list[MLPSG]):
        super().__init__()
        self.net = stack_modules([m.net for m in models])

    def forward(self, h, context=None):
        if context is not None:
            h = torch.cat([h, context.to(h.dtype)], dim=2)
        return self.net(h)


class StackedFlatten(nn.Module):
    def forward(self, x):
        return x.flatten(2)


def stack_modules(modules: list[nn.Module]) -> nn.Module:
    """One stacked module for S modules of the same structure (names of parameters and buffers kept,
    each with a leading seed dimension). Raises TypeError for a layer it has no stacked form of."""
    first = modules[0]
    if isinstance(first, nn.Sequential):
        return nn.Sequential(*(stack_modules([m[i] for m in modules]) for i in range(len(first))))
    if isinstance(first, nn.Linear):
        return StackedLinear(modules)
    if isinstance(first, nn.BatchNorm1d):
        return StackedBatchNorm1d(modules)
    if isinstance(first, nn.ReLU):
        return nn.ReLU()
    if isinstance(first, nn.Flatten):
        return StackedFlatten()
    if isinstance(first, MLPSG):
        return StackedMLPSG(modules)
    if isinstance(first, DNI):
        return StackedDNI(modules)
    raise TypeError(f"batched seeds have no stacked form of {type(first).__name__} (FCN layers only)")


def stack_blockers(arch: str, method: str, every_boundary: bool, probe: bool = False) -> list[str]:
    """Why the seeds of a run cannot be stacked (empty: they can): the one list of reasons, for a config
    before training (sgbench.families.feedforward.seeds) and for the nets handed to StackedFCN."""
    reasons = []
    if arch != "fcn":
        reasons.append("only FCNs are stacked (the CNN has convolutions)")
    if method not in STACKED_METHODS:
        reasons.append(f"method {method!r} (stacked: {', '.join(STACKED_METHODS)})")
    if not every_boundary:
        reasons.append("DNIs at only some boundaries (dni_placement)")
    if probe:
        reasons.append("the fidelity probe (probe_every)")
    return reasons


def net_stack_blockers(net) -> list[str]:
    """stack_blockers for a built FeedForwardNet."""
    arch = "cnn" if any(isinstance(m, nn.Conv2d) for m in net.modules()) else "fcn"
    return stack_blockers(arch, net.method, net.boundaries is None or all(net.placed))


class StackedFCN(nn.Module):
    """S FeedForwardNets of one FCN config (one per seed) trained as one computation.

    Built from the S single nets (so each seed starts from its own run's initialisation); its
    state_dict has the single net's keys, each tensor with a leading seed dimension, and
    `unstack_into` writes seed s's back into net s (evaluation, checkpoints)."""

    def __init__(self, nets: list):
        super().__init__()
        blockers = sorted({r for net in nets for r in net_stack_blockers(net)})
        if blockers:
            raise ValueError(f"cannot train these seeds as one batch: {'; '.join(blockers)}; run one seed per job")
        first = nets[0]
        self.method, self.num_classes, self.conditioned = first.method, first.num_classes, first.conditioned
        self.blocks = nn.ModuleList(stack_modules([n.blocks[i] for n in nets]) for i in range(len(first.blocks)))
        self.head = stack_modules([n.head for n in nets])
        self.boundaries = None if first.boundaries is None else nn.ModuleList(
            StackedDNI([n.boundaries[i] for n in nets]) for i in range(len(first.boundaries)))
        if not catalog.method("feedforward", self.method).trains_hidden:
            self.blocks.requires_grad_(False)

    @property
    def seeds(self) -> int:
        return self.head[1].weight.shape[0]

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def losses(self, x, y):
        """Each seed's mean cross-entropy (S,): x (S, B, ...), y (S, B). In train mode each boundary
        injects its seed's synthetic gradient during the backward of their sum."""
        context = one_hot(y, self.num_classes) if self.conditioned else None
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if self.boundaries is not None:
                h = self.boundaries[i](h, context)
        logits = self.head(h)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)

    def sg_losses(self) -> list:
        return [b.last_sg_loss for b in self.boundaries or []]

    @torch.no_grad()
    def unstack_into(self, nets: list) -> None:
        state = self.state_dict()
        for s, net in enumerate(nets):
            target = net.state_dict()
            for key, value in state.items():
                target[key].copy_(value[s])


def stacked_step(stacked: StackedFCN, opt, x, y, precision: str = "fp32") -> torch.Tensor:
    """One update of every seed; returns the per-seed losses (S,). The forward at the run's precision."""
    opt.zero_grad(set_to_none=True)
    with runtime.autocast(precision, x.device):
        losses = stacked.losses(x, y)
    losses.sum().backward()  # seeds share no parameter: each gets its own loss's gradient
    opt.step()
    return losses.detach()


class StackedBatches:
    """Each seed's DeviceBatches, stacked: x (S, B, ...), y (S, B)."""

    def __init__(self, streams, x_u8, y):
        self.each = [DeviceBatches(s, x_u8, y) for s in streams]

    def advance(self):
        for b in self.each:
            b.advance()

    def gather(self):
        xs, ys = zip(*(b.gather() for b in self.each))
        return torch.stack(xs), torch.stack(ys)


class StackedStepper:
    """One step of S stacked seeds per call (fused, or captured on CUDA); per-seed losses and SG
    losses summed on the device."""

    def __init__(self, mode: str, stacked: StackedFCN, opt, streams, train_x, train_y, precision: str = "fp32"):
        if mode not in ("fused", "captured"):
            raise ValueError(f"stacked seeds run step fused or captured, not {mode!r}")
        self.stacked, self.opt, self.precision = stacked, opt, precision
        self.batches = StackedBatches(streams, train_x, train_y)
        n_b = 0 if stacked.boundaries is None else len(stacked.boundaries)
        self.sums = torch.zeros(1 + n_b, stacked.seeds, device=train_x.device)
        self.captured = CapturedStep(self._body) if mode == "captured" else None

    def __call__(self) -> torch.Tensor:
        self.batches.advance()
        return self._body() if self.captured is None else self.captured()

    def _body(self) -> torch.Tensor:
        x, y = self.batches.gather()
        losses = stacked_step(self.stacked, self.opt, x, y, self.precision)
        self.sums.add_(torch.stack([losses.float(), *self.stacked.sg_losses()]))
        return losses

    def take(self, steps: int) -> tuple[list[float], list[list[float]]]:
        """Per seed: mean loss, and mean SG loss per boundary, over `steps`; resets."""
        means = (self.sums / steps).T.tolist()
        self.sums.zero_()
        return [row[0] for row in means], [row[1:] for row in means]
