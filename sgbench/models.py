"""Feed-forward nets of the DNI paper, each a stack of blocks with a DNI after every block.

FCN: every hidden block is linear(256) -> BN -> ReLU.
CNN: every hidden block is conv(128, 5x5, same padding) -> BN -> ReLU -> pool, with a
3x3 max-pool (stride 2) after the first block and 3x3 average-pools after the rest.
The output layer is a linear classifier. "A DNI between every pair of layers" means
one boundary after each hidden block, the last one feeding the classifier.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dni import DNI, ConvSG, MLPSG, one_hot

METHODS = ("backprop", "dni", "cdni", "no_bprop")
ARCHS = ("fcn", "cnn")


@dataclass(frozen=True)
class SGSpec:
    """What SG model each boundary gets. hidden_layers=None: the paper's choice."""
    hidden_layers: int | None = None
    hidden_dim: int | None = None      # units (FCN) or channels (CNN); None: 1024 / 128
    loss_weight: float = 1.0
    scale: float = 1.0


def paper_sg_hidden_layers(arch: str, method: str) -> int:
    # [DNI] supplement: FCN DNI uses a 2x1024 MLP SG, FCN cDNI a linear one on [h; label];
    # the CNN SG has 2 hidden conv layers (used for cDNI too, with label channels).
    return 0 if (arch == "fcn" and method == "cdni") else 2


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


class FeedForwardNet(nn.Module):
    """Blocks, one DNI after each (or none for backprop / no_bprop), then a linear head."""

    def __init__(self, arch: str, layers: int, method: str, in_shape, num_classes: int = 10,
                 sg: SGSpec = SGSpec()):
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
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shapes[-1]).prod()), num_classes))
        self.boundaries = None
        if method in ("dni", "cdni"):
            self.boundaries = nn.ModuleList(self._make_dni(arch, shape, sg) for shape in shapes)
        if method == "no_bprop":  # the paper's lower baseline: only the last layer learns
            self.blocks.requires_grad_(False)

    def _make_dni(self, arch: str, shape, sg: SGSpec) -> DNI:
        conditioned = self.method == "cdni"
        ctx = self.num_classes if conditioned else 0
        hidden = paper_sg_hidden_layers(arch, self.method) if sg.hidden_layers is None else sg.hidden_layers
        if arch == "fcn":
            model = MLPSG(shape[0], hidden, sg.hidden_dim or 1024, context_dim=ctx)
        else:
            model = ConvSG(shape[0], hidden, sg.hidden_dim or 128, context_dim=ctx)
        return DNI(model, conditioned=conditioned, scale=sg.scale, sg_loss_weight=sg.loss_weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        context = one_hot(y, self.num_classes) if (y is not None and self.method == "cdni") else None
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if self.boundaries is not None:
                h = self.boundaries[i](h, context)
        return self.head(h)

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

    def model_parameters(self):
        """Parameters of the network itself (blocks and head), not of the SG models."""
        return [p for m in (self.blocks, self.head) for p in m.parameters()]

    def trainable_parameters(self):
        """What the optimizer updates: the network's learnable parameters and every SG model's."""
        return [p for p in self.model_parameters() if p.requires_grad] + self.sg_parameters()

    def sg_parameters(self):
        return [] if self.boundaries is None else list(self.boundaries.parameters())

    def sg_losses(self) -> list[float | None]:
        if self.boundaries is None:
            return []
        return [None if b.last_sg_loss is None else float(b.last_sg_loss) for b in self.boundaries]
