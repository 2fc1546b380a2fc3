"""Complete unlock (predicted inputs + synthetic gradients) and asynchronous layer updates."""
import copy
import json

import jsonschema
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_ff_config
from torch import nn

from sgbench import runtime
from sgbench.families.feedforward.run import RunInterrupted, train_ff, train_step
from sgbench.nets import FeedForwardNet, SGSpec
from sgbench.unlock import InputSpec

BATCH = 16
FCN_IN, CNN_IN = (1, 6, 6), (3, 8, 8)


def tiny(data_root, **kw):
    return tiny_ff_config(data_root, **({"method": "unlock", "input_hidden_dim": 32} | kw))


def results(metrics):
    curves = {k: v for k, v in metrics["curves"].items() if k != "elapsed_s"}
    return curves, metrics["final"]


def small_net(method, arch="fcn", layers=3, seed=0, randomise_last=False):
    """A small net; randomise_last=True replaces the zero last layers of its SG and input models,
    so the first step already has non-zero synthetic gradients and predicted inputs."""
    torch.manual_seed(seed)
    in_shape = FCN_IN if arch == "fcn" else CNN_IN
    net = FeedForwardNet(arch, layers, method, in_shape, sg=SGSpec(hidden_layers=1, hidden_dim=16),
                         inputs=InputSpec(hidden_layers=1, hidden_dim=16))
    if randomise_last:
        for model in [*(b.sg_model for b in net.boundaries or []), *(net.input_models or [])]:
            for p in model.net[-1].parameters():
                nn.init.normal_(p, std=0.1)
    return net, in_shape


def batch(in_shape, seed=3, n=BATCH):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *in_shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def grads(params):
    return [None if p.grad is None else p.grad.clone() for p in params]


# ---------------------------------------------------------------- complete unlock
@pytest.mark.parametrize("arch,in_shape,steps", [("fcn", FCN_IN, 100), ("cnn", CNN_IN, 60)])
def test_input_model_regression_loss_falls_on_a_fixed_problem(arch, in_shape, steps):
    torch.manual_seed(0)
    net = FeedForwardNet(arch, 2, "unlock", in_shape, sg=SGSpec(hidden_layers=1, hidden_dim=16),
                         inputs=InputSpec(hidden_layers=1, hidden_dim=64 if arch == "fcn" else 16))
    x, y = batch(in_shape, n=32)
    opt = torch.optim.Adam(net.input_parameters(), lr=1e-2)  # the network stays fixed: so do the targets
    losses = []
    for _ in range(steps):
        net.zero_grad()
        net.training_losses(x, y)[1].backward()
        opt.step()
        losses.append([float(v) for v in net.last_input_losses])
    assert len(losses[0]) == 2  # layer 1 and the head
    for first, last in zip(losses[0], losses[-1]):
        assert first > 0 and last < 0.2 * first


def test_unlocked_layer_update_depends_only_on_its_predicted_input_and_sg():
    net, in_shape = small_net("unlock", randomise_last=True)
    x, y = batch(in_shape)
    ref = copy.deepcopy(net)
    net.training_losses(x, y)[1].backward()

    # Layer 1's gradient: its synthetic gradient, taken at its output on the predicted input,
    # backpropagated into its parameters.
    block, boundary = ref.blocks[1], ref.boundaries[1]
    out = block(ref.input_models[0](x).detach())
    sg = boundary.sg_model(out.detach()) * boundary.scale / BATCH
    expected = torch.autograd.grad(out, list(block.parameters()), sg)
    for p, g in zip(net.blocks[1].parameters(), expected):
        torch.testing.assert_close(p.grad, g)
    # The head's: the true loss on its predicted input.
    expected = torch.autograd.grad(F.cross_entropy(ref.head(ref.input_models[-1](x).detach()), y),
                                   list(ref.head.parameters()))
    for p, g in zip(net.head.parameters(), expected):
        torch.testing.assert_close(p.grad, g)
    # The top SG model's target: the true loss gradient at the *real* activation (plain forward chain).
    real = x
    for b in ref.blocks:
        real = b(real)
    target = torch.autograd.grad(F.cross_entropy(ref.head(real), y), real)[0] * BATCH
    top_out = ref.blocks[-1](ref.input_models[1](x).detach())
    expected_loss = F.mse_loss(ref.boundaries[-1].sg_model(top_out.detach()), target)
    torch.testing.assert_close(net.boundaries[-1].last_sg_loss, expected_loss.detach())


def test_unlocked_layers_do_not_learn_from_the_real_chain():
    """Changing layer 0 changes every real activation above it, but not the updates of layers 1..L."""
    net, in_shape = small_net("cunlock", randomise_last=True)
    x, y = batch(in_shape)
    other = copy.deepcopy(net)
    with torch.no_grad():
        for p in other.blocks[0].parameters():
            p.add_(torch.randn_like(p))
    for n in (net, other):
        n.training_losses(x, y)[1].backward()
    def upper(n):
        return [p for m in (*n.blocks[1:], n.head) for p in m.parameters()]

    for a, b in zip(grads(upper(net)), grads(upper(other))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # ...while the input models' targets (the real activations) did change.
    assert all(a != b for a, b in zip(net.last_input_losses, other.last_input_losses))


def test_unlock_keeps_running_stats_of_the_real_chain():
    net, in_shape = small_net("unlock", randomise_last=True)
    x, y = batch(in_shape)
    plain = copy.deepcopy(net)
    net.training_losses(x, y)
    h = x
    for block in plain.blocks:  # the real forward chain in train mode updates the running stats once
        h = block(h)
    for a, b in zip(net.blocks.buffers(), plain.blocks.buffers()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("arch", ["fcn", "cnn"])
def test_test_time_uses_the_real_forward_chain(arch):
    net, in_shape = small_net("cunlock", arch, randomise_last=True)
    x, y = batch(in_shape)
    train_step(net, torch.optim.Adam(net.trainable_parameters(), lr=1e-2), x, y)
    with torch.no_grad():
        for p in net.input_parameters():  # predicted inputs would now be NaN everywhere
            p.fill_(float("nan"))
    net.eval()
    with torch.no_grad():
        h = x
        for block in net.blocks:
            h = block(h)
        torch.testing.assert_close(net(x, y), net.head(h))
    with pytest.raises(RuntimeError, match="training_losses"):
        net.train()(x, y)


# ---------------------------------------------------------------- asynchronous updates
@pytest.mark.parametrize("method", ["backprop", "dni", "unlock"])
def test_update_mask_all_true_is_the_ordinary_step(method):
    a, in_shape = small_net(method, randomise_last=True)
    b = copy.deepcopy(a)
    for step in range(3):
        x, y = batch(in_shape, seed=step)
        train_step(a, torch.optim.SGD(a.trainable_parameters(), lr=0.1), x, y)
        train_step(b, torch.optim.SGD(b.trainable_parameters(), lr=0.1), x, y, update=[True] * 4)
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("method", ["backprop", "dni", "cdni", "unlock", "cunlock"])
def test_a_layer_that_never_updates_keeps_its_parameters(method):
    # Non-zero SG / input models: with zero ones, a frozen SG above would leave those below at 0 too.
    net, in_shape = small_net(method, randomise_last=True)
    opt = torch.optim.Adam(net.trainable_parameters(), lr=1e-2)
    groups = net.layer_parameters()
    before = [[p.detach().clone() for p in g] for g in groups]
    for step in range(6):
        train_step(net, opt, *batch(in_shape, seed=step), update=[True, False, True, True])
    for k, (g, g0) in enumerate(zip(groups, before)):
        moved = [not torch.equal(p, p0) for p, p0 in zip(g, g0)]
        assert (not any(moved)) if k == 1 else any(moved), f"layer {k}: {moved}"


def test_update_prob_one_and_unit_periods_are_the_ordinary_run(data_root, tmp_path):
    ordinary = train_ff(tiny(data_root, method="dni"), tmp_path / "a")
    explicit = train_ff(tiny(data_root, method="dni", update_prob=1.0, update_periods=[1, 1, 1]), tmp_path / "b")
    assert results(ordinary) == results(explicit)
    assert ordinary["final"]["update_fraction"] == [1.0, 1.0, 1.0]


def test_update_periods_and_prob_give_each_layer_its_share(data_root, tmp_path):
    clocks = train_ff(tiny(data_root, method="dni", update_periods=[1, 2, 4]), tmp_path / "clocks")
    assert clocks["final"]["update_fraction"] == [1.0, 0.5, 0.25]
    never = train_ff(tiny(data_root, method="backprop", update_periods=[1, 1000, 1], iterations=10), tmp_path / "never")
    assert never["final"]["update_fraction"] == [1.0, 0.0, 1.0]
    coins = train_ff(tiny(data_root, method="cdni", update_prob=0.5), tmp_path / "coins")
    fractions = coins["final"]["update_fraction"]
    assert all(0.25 < f < 0.75 for f in fractions) and len(set(fractions)) > 1  # independent per layer
    frozen = train_ff(tiny(data_root, method="no_bprop", iterations=10), tmp_path / "frozen")
    assert frozen["final"]["update_fraction"] == [0.0, 0.0, 1.0]


def test_async_run_resumes_to_the_same_result(data_root, tmp_path):
    cfg = tiny(data_root, method="cunlock", update_prob=0.5)
    straight = train_ff(cfg, tmp_path / "straight")
    with pytest.raises(RunInterrupted):
        train_ff(cfg, tmp_path / "resumed", _stop_after=20)
    assert results(train_ff(cfg, tmp_path / "resumed")) == results(straight)


# ---------------------------------------------------------------- runs, config, schema
@pytest.mark.parametrize("method", ["unlock", "cunlock"])
def test_tiny_unlock_run_writes_schema_valid_metrics(data_root, tmp_path, method):
    metrics = train_ff(tiny(data_root, method=method, iterations=60), tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    runtime.validate(on_disk, "ff_metrics")
    curves = on_disk["curves"]
    assert len(curves["sg_loss"]) == 2 and len(curves["input_loss"]) == 2
    assert all(c[-1] < c[0] for c in curves["input_loss"]), "the input models should learn"
    assert on_disk["final"]["update_fraction"] == [1.0, 1.0, 1.0] and on_disk["model"]["input_parameters"] > 0
    assert on_disk["config"]["input_hidden_layers"] == 1 and on_disk["config"]["input_hidden_dim"] == 32
    assert metrics["final"]["test_error"] < 80, "should beat chance (90%) on the easy fixture"


def test_tiny_cnn_unlock_run(data_root, tmp_path):
    cfg = tiny(data_root, arch="cnn", method="cunlock", iterations=2, eval_every=1, batch_size=8, test_limit=16,
               sg_hidden_layers=0, input_hidden_layers=0, update_periods=[1, 2, 1])
    metrics = train_ff(cfg, tmp_path)
    assert len(metrics["curves"]["input_loss"]) == 2 and metrics["final"]["update_fraction"] == [1.0, 0.5, 1.0]


def test_schema_requires_the_new_keys_only_where_they_apply(data_root, tmp_path):
    metrics = train_ff(tiny(data_root, method="dni", iterations=10), tmp_path)
    for path in ("final/update_fraction", "curves/input_loss"):
        broken = copy.deepcopy(metrics)
        section, key = path.split("/")
        del broken[section][key]
        with pytest.raises(jsonschema.ValidationError):
            runtime.validate(broken, "ff_metrics")
    broken = copy.deepcopy(metrics)
    broken["final"]["input_loss"] = []
    runtime.validate(broken, "ff_metrics")  # a finished unlock run always has some input loss
    with pytest.raises(jsonschema.ValidationError):
        runtime.validate(broken | {"config": broken["config"] | {"method": "cunlock"}}, "ff_metrics")
    old = copy.deepcopy(metrics)  # a run from before async updates: none of the new keys
    for section, key in (("final", "update_fraction"), ("final", "input_loss"), ("curves", "input_loss"),
                         ("config", "update_prob"), ("config", "update_periods")):
        del old[section][key]
    runtime.validate(old, "ff_metrics")


@pytest.mark.parametrize("bad,message", [
    ({"update_prob": 0.0}, "update_prob must be in"),
    ({"update_prob": 1.5}, "update_prob must be in"),
    ({"update_periods": [1, 2]}, "3 values for layers=2"),
    ({"update_periods": [1, 0, 1]}, "each >= 1"),
    ({"input_hidden_layers": -1}, "input_hidden_layers must be >= 0"),
])
def test_bad_async_and_unlock_config_is_refused(data_root, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny(data_root, **bad).resolved()


def test_cli_takes_the_new_flags(data_root, tmp_path):
    from sgbench.cli import main
    assert main(["train-ff", "--dataset", "mnist", "--layers", "2", "--method", "cunlock", "--iterations", "4",
                 "--batch-size", "16", "--eval-every", "2", "--update-prob", "0.5", "--update-periods", "1,2,1",
                 "--input-hidden-layers", "0", "--data-root", str(data_root), "--device", "cpu",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    config = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]
    assert config["update_prob"] == 0.5 and config["update_periods"] == [1, 2, 1]
    assert config["input_hidden_layers"] == 0 and config["input_hidden_dim"] == 1024
