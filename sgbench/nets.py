"""Feed-forward nets of the DNI paper, each a stack of blocks with a DNI after every block.

FCN: every hidden block is linear(256) -> BN -> ReLU.
CNN: every hidden block is conv(128, 5x5, same padding) -> BN -> ReLU -> pool, with a
3x3 max-pool (stride 2) after the first block and 3x3 average-pools after the rest.
The output layer is a linear classifier. "A DNI between every pair of layers" means
one boundary after each hidden block, the last one feeding the classifier.

Complete unlock (methods `unlock`, `cunlock`) lives in sgbench.unlock: the input models and the
unlocked objective; the net only holds them.

The RNN of the sequence tasks is `SequenceNet` below.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import catalog
from .catalog import ARCHS, PLACEMENTS, paper_sg_hidden_layers
from .dni import DNI, MLPSG, BootstrapL2, BPLambda, ConvSG, one_hot
from .unlock import InputSpec, make_input_model, unlocked_losses


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


BLOCKS = {"fcn": fcn_blocks, "cnn": cnn_blocks}           # one per catalog.ARCHS
SG_MODELS = {"fcn": MLPSG, "cnn": ConvSG}
assert set(BLOCKS) == set(SG_MODELS) == set(ARCHS), "sgbench.catalog.ARCHS and nets.py disagree"


def feedforward_rule(row: catalog.Method):
    """A feed-forward boundary's SG learning rule, from the method's row (one cut: no λ-return)."""
    if row.sg_rule == "bootstrap":
        return BootstrapL2()
    raise ValueError(f"feed-forward method {row.name!r}: SG rule {row.sg_rule!r} has no feed-forward form "
                     "(feed-forward boundaries learn with: bootstrap)")


def sequence_rule(row: catalog.Method, cfg):
    """A recurrent boundary's SG learning rule, from the method's row: one window's bootstrap (BP(0))
    or BP(λ) over cfg.bpl_horizon windows."""
    if row.sg_rule == "bootstrap":
        return BPLambda(0.0, cfg.sg_discount, 1)
    if row.sg_rule == "bp_lambda":
        return BPLambda(cfg.bpl_lambda, cfg.sg_discount, cfg.bpl_horizon)
    raise ValueError(f"{row.family} method {row.name!r}: unknown SG rule {row.sg_rule!r}; "
                     f"choose one of {', '.join(catalog.SG_RULES)}")


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
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        if method not in catalog.FF_METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(catalog.FF_METHODS)}")
        row = catalog.method("feedforward", method)
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.method, self.row, self.num_classes = method, row, num_classes
        self.blocks = nn.ModuleList(BLOCKS[arch](in_shape, layers))
        with torch.no_grad():  # shapes of each block's output, for the SG models and the head
            shapes, h = [], torch.zeros(2, *in_shape)
            for block in self.blocks.eval():
                h = block(h)
                shapes.append(tuple(h.shape[1:]))
        self.blocks.train()
        self.block_shapes = shapes  # per-example output shape of each block
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shapes[-1]), num_classes))
        self.boundaries = self.input_models = None
        self.placed = placed_boundaries(layers, placement) if row.uses_sg else []
        if placement != "every" and not row.placeable:
            raise ValueError(f"dni_placement {placement!r} needs one of the methods "
                             f"{', '.join(catalog.PLACEABLE_METHODS)}, not {method!r}")
        if row.uses_sg:
            self.boundaries = nn.ModuleList(
                self._make_dni(arch, shape, sg) if on else DNI(nn.Identity(), exact=True, learn_sg=False)
                for shape, on in zip(shapes, self.placed))
        if row.unlock:  # input_models[k] predicts the input of layer k + 1
            self.input_models = nn.ModuleList(make_input_model(arch, in_shape, shape, inputs, self._context_dim)
                                              for shape in shapes)
        if not row.trains_hidden:  # the paper's no-bprop lower baseline: only the last layer learns
            self.blocks.requires_grad_(False)
        self.last_input_losses: list[torch.Tensor] = []

    @property
    def conditioned(self) -> bool:
        return self.row.conditioned

    @property
    def _context_dim(self) -> int:
        return self.num_classes if self.conditioned else 0

    def _make_dni(self, arch: str, shape, sg: SGSpec) -> DNI:
        ctx = self._context_dim
        hidden = paper_sg_hidden_layers(arch, self.method) if sg.hidden_layers is None else sg.hidden_layers
        model = SG_MODELS[arch](shape[0], hidden, sg.hidden_dim or catalog.default_sg_hidden_dim(arch), context_dim=ctx)
        return DNI(model, conditioned=self.conditioned, scale=sg.scale, sg_loss_weight=sg.loss_weight,
                   rule=feedforward_rule(self.row))

    def _context(self, y: torch.Tensor | None) -> torch.Tensor | None:
        return one_hot(y, self.num_classes) if (y is not None and self.conditioned) else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits. In eval mode every method is the plain real forward chain."""
        if self.training and self.row.unlock:
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
        if self.row.unlock:
            return unlocked_losses(self, x, y)
        loss = F.cross_entropy(self(x, y), y)
        return loss, loss

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


class SequenceNet(nn.Module):
    """LSTM -> linear read-out, with a synthetic-gradient boundary on the state [h; c] (not for bptt).

    cfg: the run's settings (hidden_size, forget_bias, method, sg_* fields; sgbench.families.rnn.config
    and charlm.config). `embed` > 0 reads token ids through an embedding of that many classes (char-LM);
    0 reads float vectors (copy / repeat copy). The boundary's SG model sees the whole state [h; c]
    (the state truncation cuts), linear when sg_hidden_layers is 0, as in [DNI]."""

    def __init__(self, in_dim: int, out_dim: int, cfg, embed: int = 0, family: str = "rnn"):
        super().__init__()
        row = catalog.method(family, cfg.method)  # an unknown method: the catalog's error
        self.hidden = cfg.hidden_size
        self.embed = nn.Embedding(embed, in_dim) if embed else None
        self.lstm = nn.LSTM(in_dim, cfg.hidden_size)
        if cfg.forget_bias:  # torch splits each gate's bias in two (input and hidden): set one, zero the other
            with torch.no_grad():
                h = cfg.hidden_size
                self.lstm.bias_ih_l0[h:2 * h].fill_(cfg.forget_bias)
                self.lstm.bias_hh_l0[h:2 * h].zero_()
        self.head = nn.Linear(cfg.hidden_size, out_dim)
        self.boundary = self.aux_head = None
        if row.uses_sg:
            sg = MLPSG(2 * cfg.hidden_size, cfg.sg_hidden_layers, cfg.sg_hidden_dim)
            self.boundary = DNI(sg, scale=cfg.sg_scale, sg_loss_weight=cfg.sg_loss_weight,
                                rule=sequence_rule(row, cfg))
        if row.aux:
            self.aux_head = nn.Linear(cfg.hidden_size, 2 * cfg.hidden_size)

    def initial_state(self, batch: int, device) -> torch.Tensor:
        return torch.zeros(batch, 2 * self.hidden, device=device)

    def network_parameters(self) -> list[nn.Parameter]:
        """Everything the optimizer moves at the network's rate: all but the SG model's parameters."""
        sg = {id(p) for p in self.boundary.parameters()} if self.boundary is not None else set()
        return [p for p in self.parameters() if id(p) not in sg]

    def synthetic_gradient(self, state: torch.Tensor) -> torch.Tensor:
        """The SG model's per-example gradient at a state (graph to the SG parameters, not the state)."""
        return self.boundary.synthetic_gradient(state)

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        """x [T, B, in] (or token ids [T, B]), state [B, 2H] -> (logits [T, B, out], LSTM outputs
        [T, B, H], end state [B, 2H])."""
        if self.embed is not None:
            x = self.embed(x)
        h0, c0 = state[:, :self.hidden], state[:, self.hidden:]
        # nn.LSTM.forward's own call (the same kernel, the same numbers) without its per-call argument
        # checks, a quarter of a small LSTM's forward on a CPU (issue #24); the inputs are ours, checked here
        lstm = self.lstm
        if x.dim() != 3 or state.shape != (x.shape[1], 2 * self.hidden):
            raise ValueError(f"expected inputs [T, B, in] and a state [B, {2 * self.hidden}], "
                             f"got {tuple(x.shape)} and {tuple(state.shape)}")
        out, h, c = torch.lstm(x, (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()), lstm._flat_weights,
                               lstm.bias, lstm.num_layers, lstm.dropout, lstm.training, lstm.bidirectional,
                               lstm.batch_first)
        return self.head(out), out, torch.cat([h[0], c[0]], dim=1)
