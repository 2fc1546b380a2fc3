"""What a parallel worker is made of: its stage (a contiguous run of a FeedForwardNet's units, with
their DNIs), its links to the neighbouring stages (ordered point-to-point messages, waiting counted)
and the FLOPs per unit that decide where the net is cut. The protocols (protocols.py) use them."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ... import runtime
from ...dni import one_hot

TAG_UP, TAG_DOWN, TAG_EVAL = 1, 2, 3     # activations up, gradients down, evaluation activations up


class Stage(nn.Module):
    """Units lo..hi-1 of a FeedForwardNet (units: its blocks, then the head) and their DNIs.
    `top_call(boundary, h, context)`, when set, evaluates the top boundary instead of calling it
    (the stored late-SG variant evaluates it on a parameter snapshot)."""

    def __init__(self, net, lo: int, hi: int, precision: str = "fp32"):
        super().__init__()
        self.precision = precision  # the run's: training forwards under runtime.autocast (issue #26)
        n_blocks = len(net.blocks)
        self.blocks = nn.ModuleList(net.blocks[lo:min(hi, n_blocks)])
        self.boundaries = None if net.boundaries is None else nn.ModuleList(net.boundaries[lo:min(hi, n_blocks)])
        for boundary in self.boundaries or []:
            boundary.inject = "now"  # no loss is backpropagated through a stage below the head: inject at once
        self.head = net.head if hi == n_blocks + 1 else None
        self.num_classes, self.conditioned = net.num_classes, net.conditioned
        self.top_call = None

    @property
    def top_boundary(self):
        """The DNI on the stage's output (None for the last stage, or without SGs)."""
        return None if (self.head is not None or self.boundaries is None) else self.boundaries[-1]

    def context(self, y):
        return one_hot(y, self.num_classes) if (self.conditioned and y is not None) else None

    def forward(self, h, y=None):
        """The stage's output: the activation to send up, or the logits for the last stage. In
        training every DNI injects its synthetic gradient as it goes (sgbench.dni), and the forward
        runs at the run's precision; the output is fp32 whatever it is, so the links between workers
        (their buffers, the gradients sent down) and the loss stay fp32. Evaluation runs in fp32, as
        the single-process runner's."""
        if not self.training or self.precision == "fp32":
            return self._forward(h, y)
        with runtime.autocast(self.precision, h.device):
            return self._forward(h, y).float()

    def _forward(self, h, y=None):
        context = self.context(y)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if self.boundaries is not None:
                top = i == len(self.blocks) - 1 and self.head is None
                h = (self.top_call(self.boundaries[i], h, context) if top and self.top_call and self.training
                     else self.boundaries[i](h, context))
        return h if self.head is None else self.head(h)


def unit_flops(net, in_shape) -> list[float]:
    """FLOPs per example of one training step of each unit: 3x its forward (forward + backward),
    counting the block and its SG model. Decides where the stages are cut."""
    net = net.eval()
    flops, h = [], torch.zeros(2, *in_shape)
    units = list(zip(net.blocks, net.boundaries or [None] * len(net.blocks))) + [(net.head, None)]
    with torch.no_grad():
        for block, boundary in units:
            counter = FlopCounterMode(display=False)
            with counter:
                h = block(h)
                if boundary is not None:
                    ctx = torch.zeros(2, net.num_classes) if boundary.conditioned else None
                    boundary.sg_model(h, ctx)
            flops.append(3 * counter.get_total_flops() / 2)
    net.train()
    return flops


# ---------------------------------------------------------------- messages
class Link:
    """Ordered point-to-point messages with one neighbour. Sends never block the sender; receives
    block, and the seconds spent blocked are counted as waiting."""

    def __init__(self, peer: int, device: torch.device, staged: bool):
        self.peer, self.device, self.staged = peer, device, staged
        self.in_flight: list = []  # (work, tensor): a sent tensor must outlive its send
        self.wait_s = 0.0

    def send(self, tensor: torch.Tensor, tag: int) -> None:
        t = tensor.detach()
        t = (t.cpu() if self.staged else t).contiguous()
        self.in_flight = [(w, b) for w, b in self.in_flight if not w.is_completed()]
        self.in_flight.append((dist.isend(t, self.peer, tag=tag), t))

    def recv(self, shape, tag: int, dtype=torch.float32) -> torch.Tensor:
        buf = torch.empty(shape, dtype=dtype, device="cpu" if self.staged else self.device)
        t0 = time.perf_counter()
        dist.recv(buf, self.peer, tag=tag)
        self.wait_s += time.perf_counter() - t0
        return buf.to(self.device)

    def close(self) -> None:
        for work, _ in self.in_flight:
            work.wait()
        self.in_flight = []


@dataclass
class Worker:
    """One worker process: its part of the net (a stage, or the whole net for data parallelism) and
    its links to the neighbouring stages."""
    rank: int
    workers: int
    stage: nn.Module
    in_shape: tuple          # per example, of what arrives from below (the image for stage 0)
    out_shape: tuple         # per example, of what goes up
    below: Link | None
    above: Link | None
    device: torch.device

    @property
    def keeps_curves(self) -> bool:
        """The worker that evaluates the real chain's output: the last stage (data parallel: rank 0)."""
        return self.above is None and (self.below is not None or self.rank == 0)

    def receive_batch(self, batch_size: int):
        """(activation, labels) from the stage below; the activation is a leaf whose .grad the
        backward fills, to send down."""
        h = self.below.recv((batch_size, *self.in_shape), TAG_UP).requires_grad_()
        y = self.below.recv((batch_size,), TAG_UP, torch.int64)
        return h, y

    def send_up(self, h, y, tag: int = TAG_UP) -> None:
        self.above.send(h, tag)
        if y is not None:
            self.above.send(y, tag)

    def wait_s(self) -> float:
        return sum(link.wait_s for link in (self.below, self.above) if link is not None)


def sync(device) -> None:
    """Wait for the device: GPU work is asynchronous, and a clock must count it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
