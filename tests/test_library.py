"""The DNI boundary as a library for people's own models (issue #13): plain training loops, skip
connections, any SG module, any activation shape, a pluggable learning rule, and the README snippet."""
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgbench import DNI, MLPSG, BootstrapL2, zero_last
from sgbench.dni import ConvSG

ROOT = Path(__file__).resolve().parents[1]


def two_layers(seed=0):
    torch.manual_seed(seed)
    layer1, layer2 = nn.Linear(6, 5), nn.Linear(5, 3)
    sg = MLPSG(5)
    nn.init.normal_(sg.net[-1].weight), nn.init.normal_(sg.net[-1].bias)  # a non-zero SG from the start
    return layer1, layer2, DNI(sg)


def train(order: str, steps: int = 5):
    layer1, layer2, dni = two_layers()
    params = [*layer1.parameters(), *layer2.parameters(), *dni.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    x, y = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for _ in range(steps):
        if order == "zero_grad first":
            opt.zero_grad()
        loss = F.cross_entropy(layer2(dni(layer1(x))), y)
        if order == "forward first":
            opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in params]


def test_any_order_of_zero_grad_and_forward_gives_the_same_training():
    a, b = train("zero_grad first"), train("forward first")
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_the_layer_below_gets_the_scaled_synthetic_gradient_and_the_sg_its_target():
    layer1, layer2, dni = two_layers()
    dni.scale = 0.5
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    h = layer1(x)
    out = dni(h)
    out.retain_grad()
    F.cross_entropy(layer2(out), y).backward()
    sg = dni.sg_model(h.detach())
    expected = torch.autograd.grad(layer1(x), layer1.weight, sg.detach() * 0.5 / 8)[0]
    torch.testing.assert_close(layer1.weight.grad, expected)
    target = out.grad * 8  # the per-example gradient that arrived at the boundary
    torch.testing.assert_close(dni.last_sg_loss, ((sg - target) ** 2).mean())


def test_a_skip_connection_around_the_dni_trains_in_one_backward():
    """The graph reaches h twice (through the DNI and around it): one backward, both gradients."""
    layer1, layer2, dni = two_layers()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    h = layer1(x)
    skip = nn.Linear(5, 3)
    loss = F.cross_entropy(layer2(dni(h)) + skip(h), y)
    loss.backward()  # no "backward through the graph a second time"
    sg = dni.sg_model(h.detach()).detach()
    h2 = layer1(x)
    logits = layer2(h2.detach()) + skip(h2)
    true_via_skip = torch.autograd.grad(F.cross_entropy(logits, y), h2)[0]
    expected = torch.autograd.grad(layer1(x), layer1.weight, sg / 8 + true_via_skip)[0]
    torch.testing.assert_close(layer1.weight.grad, expected)


class TakesH(nn.Module):
    def __init__(self, shape_dim):
        super().__init__()
        self.lin = zero_last(nn.Linear(shape_dim, shape_dim))

    def forward(self, h):  # one argument only: a user's own SG model
        return self.lin(h)


class TakesHAndContext(nn.Module):
    def __init__(self, dim, context_dim):
        super().__init__()
        self.lin = nn.Linear(dim + context_dim, dim)

    def forward(self, h, context):
        return self.lin(torch.cat([h, context], dim=-1))


@pytest.mark.parametrize("shape", [(4, 7), (4, 3, 7), (4, 2, 5, 7)])  # [B, D], [B, T, D], [B, C, H, W]-like
def test_any_module_and_any_activation_shape(shape):
    torch.manual_seed(0)
    dni = DNI(TakesH(shape[-1]))
    assert torch.equal(dni.synthetic_gradient(torch.randn(*shape)), torch.zeros(*shape))  # zero_last
    nn.init.normal_(dni.sg_model.lin.weight)
    h = torch.randn(*shape, requires_grad=True)
    out = dni(h)
    (out * torch.randn(*shape)).sum().backward()
    torch.testing.assert_close(h.grad, dni.sg_model(h.detach()).detach() / shape[0])
    assert dni.last_sg_loss is not None and torch.isfinite(dni.last_sg_loss)


def test_feature_maps_with_the_conv_sg_and_a_conditioned_custom_module():
    torch.manual_seed(0)
    conv = DNI(ConvSG(3, hidden_layers=1, hidden_channels=4, kernel_size=3))
    h = torch.randn(2, 3, 5, 5, requires_grad=True)
    conv(h).sum().backward()
    assert h.grad.shape == h.shape
    cond = DNI(TakesHAndContext(7, 2), conditioned=True)
    h = torch.randn(4, 7, requires_grad=True)
    cond(h, torch.ones(4, 2)).sum().backward()
    assert h.grad is not None


def test_context_mismatch_and_wrong_output_shape_are_clear_errors():
    with pytest.raises(ValueError, match="context of size 10 but conditioned=False"):
        DNI(MLPSG(6, context_dim=10))
    with pytest.raises(ValueError, match="context of size 0 but conditioned=True"):
        DNI(MLPSG(6), conditioned=True)
    with pytest.raises(ValueError, match=r"returned shape \(4, 3\) for an activation of shape \(4, 6\)"):
        DNI(nn.Linear(6, 3))(torch.randn(4, 6, requires_grad=True))
    with pytest.raises(ValueError, match="unknown inject mode"):
        DNI(MLPSG(6), inject="later")


def test_the_learning_rule_is_pluggable():
    class TowardsZero(BootstrapL2):
        def target(self, grad_from_above):
            return torch.zeros_like(grad_from_above)

    torch.manual_seed(0)
    dni = DNI(TakesH(4), rule=TowardsZero())
    nn.init.normal_(dni.sg_model.lin.weight)
    opt = torch.optim.SGD(dni.parameters(), lr=0.5)
    h = torch.randn(16, 4)
    for _ in range(50):
        opt.zero_grad()
        (dni(h.clone().requires_grad_()) * torch.randn(16, 4)).sum().backward()
        opt.step()
    assert dni.sg_model(h).abs().max() < 0.05  # regressed to the rule's target, not to the arriving gradient


def test_inject_now_gives_the_layer_its_gradient_during_the_forward():
    layer1, _, dni = two_layers()
    dni.inject = "now"
    x = torch.randn(8, 6)
    dni(layer1(x))
    assert layer1.weight.grad is not None  # decoupled workers update before anything above has run


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- library-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no library snippet"
    return match.group(1)


def test_the_readme_snippet_runs_and_learns():
    scope: dict = {}
    exec(compile(readme_snippet(), "README.md snippet", "exec"), scope)
    assert scope["losses"][-1] < 0.5 * scope["losses"][0]
    assert torch.isfinite(scope["dni"].last_sg_loss)
