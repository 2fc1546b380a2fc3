"""The fast training step (sgbench.fast, issue #17): one backward equals a backward per boundary, the fused
step (device batches) equals the eager one, batched seeds equal their single runs, and (CUDA only)
the captured step equals the eager one."""
import copy

import pytest
import torch
from torch import nn

from sgbench.data import as_input
from sgbench.families.feedforward.run import BatchStream, UpdateSchedule, train_step
from sgbench.fast import (
    DeviceBatches,
    StackedBatches,
    StackedFCN,
    StackedStepper,
    Stepper,
    make_optimizer,
    resolve_step,
    stacked_step,
)
from sgbench.nets import FeedForwardNet, SGSpec
from sgbench.unlock import InputSpec

FCN_IN, CNN_IN = (1, 6, 6), (3, 8, 8)
STEPS = 4
SEEDS = (0, 1, 2)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# On a CPU the forms below run the same kernels on the same values, only in another order, and each
# parameter's gradient arrives along one path: they agree to the last bit here (max difference 0.0).
# 1e-6 absolute after the steps (Adam, lr 1e-2) leaves room for a BLAS that picks another kernel.
ATOL = 1e-6


def small_net(method, arch="fcn", layers=None, seed=0, **kw):
    """A small net whose SG and input models start non-zero, so every step moves every layer."""
    torch.manual_seed(seed)
    in_shape = FCN_IN if arch == "fcn" else CNN_IN
    layers = layers or (3 if arch == "fcn" else 2)  # CNN blocks have 128 channels: keep them few
    net = FeedForwardNet(arch, layers, method, in_shape, sg=SGSpec(hidden_layers=1, hidden_dim=16),
                         inputs=InputSpec(hidden_layers=1, hidden_dim=16), **kw)
    for model in [*(b.sg_model for b in net.boundaries or []), *(net.input_models or [])]:
        if hasattr(model, "net"):  # (a boundary without a DNI, dni_placement, has none)
            for p in model.net[-1].parameters():
                nn.init.normal_(p, std=0.1)
    return net


def batches(arch, n=STEPS, seed=3, size=8):
    g = torch.Generator().manual_seed(seed)
    shape = FCN_IN if arch == "fcn" else CNN_IN
    return [(torch.rand(size, *shape, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


def train(net, data, prob=1.0):
    """train_step with Adam on each batch; returns the per-step losses and SG losses."""
    opt = torch.optim.Adam(net.trainable_parameters(), lr=1e-2)
    schedule = UpdateSchedule(len(net.blocks) + 1, prob, seed=7)
    losses, sg = [], []
    for t, (x, y) in enumerate(data, 1):
        losses.append(train_step(net, opt, x, y, schedule.mask(t)).detach())
        sg.append(net.sg_losses())
    return torch.stack(losses), sg


def assert_same_state(a, b, atol=ATOL, skip=()):
    state = a.state_dict()
    for key, value in b.state_dict().items():
        if key not in skip:
            torch.testing.assert_close(state[key], value, atol=atol, rtol=0, msg=lambda m, key=key: f"{key}: {m}")


# ---------------------------------------------------------------- one backward per step
@pytest.mark.parametrize("arch,method,prob,placement", [("fcn", "dni", 1.0, "every"), ("fcn", "cdni", 0.5, "every"),
                                                        ("cnn", "dni", 1.0, "every"), ("cnn", "cdni", 0.5, "middle")])
def test_one_backward_step_equals_a_backward_per_boundary(arch, method, prob, placement):
    """The step as it ran before the redesign (inject "now": `h.backward(sg)` inside the forward, one
    backward per boundary, then the loss's) against the one backward per step (inject "backward")."""
    one = small_net(method, arch, placement=placement)
    per_boundary = copy.deepcopy(one)
    for boundary in per_boundary.boundaries:
        boundary.inject = "now"
    data = batches(arch)
    loss_one, sg_one = train(one, data, prob)
    loss_per, sg_per = train(per_boundary, data, prob)
    torch.testing.assert_close(loss_one, loss_per, atol=ATOL, rtol=0)
    assert sg_one == [pytest.approx(row, abs=ATOL) for row in sg_per]
    assert_same_state(one, per_boundary)
    start = small_net(method, arch, placement=placement).state_dict()
    moved = sum(not torch.equal(v, start[k]) for k, v in one.state_dict().items())
    assert moved > len(start) // 2, "the steps should move most of the state"


def test_one_backward_step_in_warmup_exact_mode():
    one = small_net("dni", layers=4)
    one.set_exact(True)  # warm-up: the SGs pass the true gradient and still learn
    per_boundary = copy.deepcopy(one)
    for boundary in per_boundary.boundaries:
        boundary.inject = "now"
    data = batches("fcn")
    torch.testing.assert_close(train(one, data)[0], train(per_boundary, data)[0], atol=ATOL, rtol=0)
    assert_same_state(one, per_boundary)


# ---------------------------------------------------------------- the fused step (device batches)
def test_device_batches_follow_the_batch_stream_across_epochs():
    x = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1)
    y = torch.arange(50)
    reference, stream = BatchStream(50, 16, seed=5), BatchStream(50, 16, seed=5)
    device_batches = DeviceBatches(stream, x, y)
    for _ in range(10):  # 3 batches per epoch: crosses three epoch ends
        idx = reference.next()
        device_batches.advance()
        xb, yb = device_batches.gather()
        assert torch.equal(yb, idx)
        torch.testing.assert_close(xb.view(-1), idx.float() / 255)
    assert stream.pos == reference.pos and torch.equal(stream.perm, reference.perm)


def run_stepper(mode, method, arch, device, steps, prob=1.0, adam="for-loop"):
    """A tiny run through Stepper on random device-resident data with an LR milestone half-way;
    returns (per-step losses, final state dict)."""
    net = small_net(method, arch).to(device)
    g = torch.Generator().manual_seed(1)
    shape = FCN_IN if arch == "fcn" else CNN_IN
    train_x = torch.randint(0, 256, (24, *shape), generator=g, dtype=torch.uint8).to(device)
    train_y = torch.randint(0, 10, (24,), generator=g).to(device)
    opt = make_optimizer(net.trainable_parameters(), 1e-2, mode, torch.device(device), adam)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [steps // 2], gamma=0.1)
    schedule = UpdateSchedule(len(net.blocks) + 1, prob, seed=7)
    stepper = Stepper(mode, net, opt, BatchStream(24, 8, 0), train_x, train_y, schedule, train_step)
    losses = []
    for t in range(1, steps + 1):
        losses.append(stepper(t).detach().clone())
        sched.step()
    return torch.stack(losses), net


@pytest.mark.parametrize("method,arch,prob", [("backprop", "fcn", 1.0), ("dni", "fcn", 1.0), ("cdni", "cnn", 0.5),
                                              ("unlock", "fcn", 1.0), ("cunlock", "fcn", 1.0)])
def test_fused_step_equals_eager_step_on_cpu(method, arch, prob):
    """5 steps over two epochs (3 batches each): the same batches in the same order, the same update."""
    loss_e, net_e = run_stepper("eager", method, arch, "cpu", 5, prob)
    loss_f, net_f = run_stepper("fused", method, arch, "cpu", 5, prob)
    torch.testing.assert_close(loss_f, loss_e, atol=ATOL, rtol=0)
    assert_same_state(net_f, net_e)


class _Cfg:
    def __init__(self, update_prob=1.0, update_periods=None, warmup=0.0):
        self.update_prob, self.update_periods, self.warmup = update_prob, update_periods, warmup


def test_step_mode_resolution_and_refusals():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_step("auto", _Cfg(), cpu) == "eager"
    assert resolve_step("auto", _Cfg(), gpu) == "captured"
    assert resolve_step("auto", _Cfg(update_prob=0.5), gpu) == "fused"
    assert resolve_step("auto", _Cfg(update_periods=[1, 2]), gpu) == "fused"
    assert resolve_step("fused", _Cfg(warmup=0.1), cpu) == "fused"
    with pytest.raises(ValueError, match="needs a CUDA device.*use step fused"):
        resolve_step("captured", _Cfg(), cpu)
    with pytest.raises(ValueError, match="warmup.*use step fused"):
        resolve_step("captured", _Cfg(warmup=0.3), gpu)
    with pytest.raises(ValueError, match="unknown step 'graph'"):
        resolve_step("graph", _Cfg(), cpu)


@cuda
@pytest.mark.parametrize("method,arch", [("backprop", "fcn"), ("dni", "fcn"), ("cdni", "fcn"), ("cunlock", "fcn"),
                                         ("dni", "cnn")])
def test_captured_step_equals_eager_on_cuda(method, arch, monkeypatch):
    """Replays of the captured step (capturable Adam, a tensor LR through a milestone) against eager steps
    on the same GPU. Tolerance: capturable Adam computes its bias correction on the device in float32
    (eager: in float64 on the host), and cuBLAS/cuDNN may pick other kernels for the captured calls;
    Adam can turn such rounding into a few percent of its step, lr = 1e-2 here: 1e-3 absolute."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    steps = 12  # 3 warm-up steps, the captured step, 8 replays; the LR drops at step 6
    loss_e, net_e = run_stepper("eager", method, arch, "cuda", steps)
    loss_c, net_c = run_stepper("captured", method, arch, "cuda", steps)
    torch.testing.assert_close(loss_c, loss_e, atol=1e-4, rtol=1e-4)
    assert_same_state(net_c, net_e, atol=1e-3, skip=pre_norm_biases(net_e))


@cuda
def test_captured_step_with_the_fused_adam_equals_eager_on_cuda(monkeypatch):
    """adam fused under the captured step: torch's fused kernel, capturable, with the tensor LR through a
    milestone, against the eager step with the fused kernel (tolerance as above)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    loss_e, net_e = run_stepper("eager", "dni", "fcn", "cuda", 12, adam="fused")
    loss_c, net_c = run_stepper("captured", "dni", "fcn", "cuda", 12, adam="fused")
    torch.testing.assert_close(loss_c, loss_e, atol=1e-4, rtol=1e-4)
    assert_same_state(net_c, net_e, atol=1e-3, skip=pre_norm_biases(net_e))


# ---------------------------------------------------------------- batched seeds
def pre_norm_biases(net) -> set[str]:
    """Keys of the biases of linear and conv layers that feed a batch norm, and of that norm's running
    mean. The norm subtracts the bias again, so its true gradient is 0 and what it gets is rounding
    noise, which Adam scales up to steps of about lr in either direction: it differs between any two
    summation orders, changes no training output, and the running mean tracks it."""
    keys = set()
    for name, module in net.named_modules():
        if isinstance(module, nn.Sequential):
            for i, (a, b) in enumerate(zip(module, list(module)[1:])):
                if isinstance(a, (nn.Linear, nn.Conv2d)) and isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    keys |= {f"{name}.{i}.bias", f"{name}.{i + 1}.running_mean"}
    return keys


def stacked_data():
    g = torch.Generator().manual_seed(1)
    return (torch.randint(0, 256, (64, *FCN_IN), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (64,), generator=g))


@pytest.mark.parametrize("method", ["no_bprop", "dni", "cdni"])
def test_each_stacked_seed_equals_its_single_run(method):
    """Each seed's loss and SG-loss curves in the stacked run, and its final state, equal its own run's
    (its own initialisation and batch order). Tolerance: a batched matrix product may sum in another
    order than a single one: 1e-5 on every curve point, parameter and statistic after the steps,
    except the pre-norm biases (see `pre_norm_biases`)."""
    nets = [small_net(method, seed=s) for s in SEEDS]
    train_x, train_y = stacked_data()
    stacked = StackedFCN(nets)
    opt = torch.optim.Adam(stacked.trainable_parameters(), lr=1e-2)
    batches_s = StackedBatches([BatchStream(64, 16, s) for s in SEEDS], train_x, train_y)
    curves = []
    for _ in range(STEPS):
        batches_s.advance()
        x, y = batches_s.gather()
        curves.append((stacked_step(stacked, opt, x, y), [v.clone() for v in stacked.sg_losses()]))
    stacked.unstack_into(nets)
    for s, seed in enumerate(SEEDS):
        single = small_net(method, seed=seed)
        opt1 = torch.optim.Adam(single.trainable_parameters(), lr=1e-2)
        stream = BatchStream(64, 16, seed)
        for loss_stacked, sg_stacked in curves:
            idx = stream.next()
            loss = train_step(single, opt1, as_input(train_x[idx]), train_y[idx])
            torch.testing.assert_close(loss_stacked[s], loss.detach(), atol=1e-5, rtol=0)
            assert [float(v[s]) for v in sg_stacked] == pytest.approx(single.sg_losses(), abs=1e-5)
        skip = pre_norm_biases(single)
        assert skip and skip <= set(single.state_dict())
        assert_same_state(nets[s], single, atol=1e-5, skip=skip)


def test_stacked_stepper_sums_each_seeds_losses():
    nets = [small_net("cdni", seed=s) for s in SEEDS]
    train_x, train_y = stacked_data()
    stacked = StackedFCN(nets)
    opt = torch.optim.Adam(stacked.trainable_parameters(), lr=1e-2)
    stepper = StackedStepper("fused", stacked, opt, [BatchStream(64, 16, s) for s in SEEDS], train_x, train_y)
    losses = torch.stack([stepper() for _ in range(3)])
    mean_loss, mean_sg = stepper.take(3)
    assert mean_loss == pytest.approx(losses.mean(0).tolist(), rel=1e-6)
    assert len(mean_sg) == len(SEEDS) and len(mean_sg[0]) == len(nets[0].boundaries)
    assert all(v > 0 for row in mean_sg for v in row)
    assert stepper.take(1)[0] == [0.0] * len(SEEDS)


@pytest.mark.parametrize("method", ["dni", "cdni"])
def test_stacked_step_is_the_single_step_in_float64(method):
    """In float64, where rounding cannot be amplified into visible steps, 30 stacked steps give each
    seed its single run's losses to 1e-12 relative: the same computation, only batched."""
    nets = [small_net(method, seed=s).double() for s in SEEDS]
    train_x, train_y = stacked_data()
    stacked = StackedFCN(nets)
    opt = torch.optim.Adam(stacked.trainable_parameters(), lr=1e-3)
    batches_s = StackedBatches([BatchStream(64, 16, s) for s in SEEDS], train_x, train_y)
    losses = []
    for _ in range(30):
        batches_s.advance()
        x, y = batches_s.gather()
        losses.append(stacked_step(stacked, opt, x.double(), y))
    for s, seed in enumerate(SEEDS):
        single = small_net(method, seed=seed).double()
        opt1 = torch.optim.Adam(single.trainable_parameters(), lr=1e-3)
        stream = BatchStream(64, 16, seed)
        for loss_stacked in losses:
            idx = stream.next()
            loss = train_step(single, opt1, as_input(train_x[idx]).double(), train_y[idx]).detach()
            torch.testing.assert_close(loss_stacked[s], loss, rtol=1e-12, atol=0)


class HalfTarget:
    """A toy SG rule: BootstrapL2 towards half the arriving gradient (a rule the stacked step must not
    replace with its own)."""

    def target(self, grad_from_above):
        return 0.5 * grad_from_above * grad_from_above.shape[0]

    def loss(self, sg, target):
        diff = sg - target
        return diff.pow(2).mean(), 2.0 * diff / diff.numel()


def test_stacked_dni_learns_through_the_boundarys_rule():
    """The stacked DNI backward goes through each boundary's rule (sgbench.dni): with a toy rule, each
    stacked seed's losses are its single run's with that rule (float64, 1e-12), and differ from the
    default rule's (so a stacked step that ignored the rule would fail here)."""
    def nets_with(rule, seed):
        net = small_net("dni", seed=seed).double()
        for b in net.boundaries:
            b.rule = rule or b.rule  # None: the default rule (BootstrapL2)
        return net
    train_x, train_y = stacked_data()

    def stacked_losses(rule):
        stacked = StackedFCN([nets_with(rule, s) for s in SEEDS])
        opt = torch.optim.Adam(stacked.trainable_parameters(), lr=1e-3)
        batches = StackedBatches([BatchStream(64, 16, s) for s in SEEDS], train_x, train_y)
        out = []
        for _ in range(10):
            batches.advance()
            x, y = batches.gather()
            out.append(stacked_step(stacked, opt, x.double(), y))
        return torch.stack(out)
    toy, default = stacked_losses(HalfTarget()), stacked_losses(None)
    assert not torch.allclose(toy, default, rtol=1e-6, atol=0)
    for s, seed in enumerate(SEEDS):
        single = nets_with(HalfTarget(), seed)
        opt1 = torch.optim.Adam(single.trainable_parameters(), lr=1e-3)
        stream = BatchStream(64, 16, seed)
        for step in range(10):
            idx = stream.next()
            loss = train_step(single, opt1, as_input(train_x[idx]).double(), train_y[idx]).detach()
            torch.testing.assert_close(toy[step, s], loss, rtol=1e-12, atol=0)


@cuda
def test_captured_stacked_seeds_equal_fused_on_cuda(monkeypatch):
    """The stacked step replayed as a CUDA graph against the same step run eagerly, 3 seeds, 10 steps
    (tolerance as for the captured single step)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    train_x, train_y = (t.cuda() for t in stacked_data())
    results = []
    for mode in ("fused", "captured"):
        stacked = StackedFCN([small_net("dni", seed=s) for s in SEEDS]).cuda()
        opt = make_optimizer(stacked.trainable_parameters(), 1e-2, mode, torch.device("cuda"))
        stepper = StackedStepper(mode, stacked, opt, [BatchStream(64, 16, s) for s in SEEDS], train_x, train_y)
        losses = torch.stack([stepper().clone() for _ in range(10)])
        results.append((losses, stepper.take(10), stacked))
    (loss_f, take_f, net_f), (loss_c, take_c, net_c) = results
    torch.testing.assert_close(loss_c, loss_f, atol=1e-4, rtol=1e-4)
    assert take_c[0] == pytest.approx(take_f[0], rel=1e-4)
    assert_same_state(net_c, net_f, atol=1e-3, skip=pre_norm_biases(small_net("dni")))


def test_stacking_refuses_what_it_cannot_batch():
    with pytest.raises(ValueError, match="only FCNs.*one seed per job"):
        StackedFCN([small_net("dni", "cnn", seed=s) for s in SEEDS])
    with pytest.raises(ValueError, match="method 'unlock'"):
        StackedFCN([small_net("unlock", seed=s) for s in SEEDS])
    with pytest.raises(ValueError, match="dni_placement"):
        StackedFCN([small_net("dni", seed=s, placement="middle") for s in SEEDS])


# ---------------------------------------------------------------- the runner's `step` setting
def test_run_with_fused_step_equals_the_eager_run(data_root, tmp_path):
    from helpers import tiny_ff_config

    from sgbench.families.feedforward.run import train_ff
    kw = {"iterations": 20, "eval_every": 10, "test_limit": 100}
    eager = train_ff(tiny_ff_config(data_root, **kw), tmp_path / "eager")
    fused = train_ff(tiny_ff_config(data_root, step="fused", **kw), tmp_path / "fused")
    auto = train_ff(tiny_ff_config(data_root, step="auto", **kw), tmp_path / "auto")
    assert (eager["timing"]["step"], fused["timing"]["step"], auto["timing"]["step"]) == ("eager", "fused", "eager")
    for key in ("step", "train_loss", "test_error", "lr", "sg_loss"):  # same kernels, same values: identical
        assert fused["curves"][key] == eager["curves"][key] == auto["curves"][key], key
    with pytest.raises(ValueError, match="captured needs a CUDA device"):
        train_ff(tiny_ff_config(data_root, step="captured", **kw), tmp_path / "captured")
    assert not (tmp_path / "captured" / "metrics.json").exists()


def test_gpu_tier_is_mnist_fcn_table1_on_the_fast_path():
    import jsonschema
    import yaml

    from sgbench.catalog import TABLE1_METHODS, TIERS
    from sgbench.families import grid
    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "workflows"
    tiers = {t: yaml.safe_load((root / "config" / "tiers" / f"{t}.yaml").read_text()) for t in ("gpu", "paper")}
    jsonschema.validate(tiers["gpu"], yaml.safe_load((root / "schemas" / "tier.schema.yaml").read_text()))
    runs = grid.expand(tiers["gpu"], "gpu")["feedforward"]
    points = {(c.dataset, c.arch, c.layers, c.method, c.seed) for c in runs.values()}
    assert "gpu" in TIERS and len(runs) == 48
    assert points == {("mnist", "fcn", d, m, s) for d in (3, 4, 5, 6) for m in TABLE1_METHODS for s in (0, 1, 2)}
    assert {c.step for c in runs.values()} == {"auto"}
    paper = grid.expand(tiers["paper"], "paper")
    assert {c.step for family in ("feedforward", "diagnostics") for c in paper[family].values()} == {"auto"}


def test_parallel_runs_have_no_fast_step(tmp_path, capsys):
    """The parallel workers time the eager step: `step` is train-ff's alone (no field, no flag; a
    recorded config may hold only the eager step every parallel run took)."""
    import dataclasses

    from sgbench import cli
    from sgbench.families.parallel.config import ParallelConfig
    assert "step" not in {f.name for f in dataclasses.fields(ParallelConfig)}
    with pytest.raises(SystemExit) as exited:
        cli.main(["train-parallel", "--out", str(tmp_path / "run"), "--step", "fused"])
    assert exited.value.code == 2 and "--step" in capsys.readouterr().err
    with pytest.raises(ValueError, match="retired config key.*step='fused'"):
        ParallelConfig.from_dict({"step": "fused"})
    assert ParallelConfig.from_dict({"step": "eager"}) == ParallelConfig()


def test_seeds_in_one_process_equal_their_single_runs(data_root, tmp_path):
    """`seeds` trains them as one batch and writes each seed's metrics.json, in the single run's form,
    where out names it; each curve equals its own single run's. Tolerance: batched and single matrix
    products round differently (in float64 they agree to 1e-12: test_stacked_step_is_the_single_step_
    in_float64), and Adam turns float32 rounding in near-zero gradients into full steps: over 12 steps
    at lr 1e-3 the mean losses drift apart by under 1e-3 relative (seen: 6.5e-4): 2e-3; the SG losses,
    small squared differences of nearly equal gradients, by more: 2e-2. Test errors are equal."""
    from helpers import tiny_ff_config

    from sgbench import runtime
    from sgbench.families.feedforward.seeds import train as train_ff
    kw = {"method": "cdni", "iterations": 12, "eval_every": 6, "test_limit": 100}
    grouped = train_ff(tiny_ff_config(data_root, seeds=[0, 1], **kw), tmp_path / "run-seed{seed}")
    for seed, metrics in zip((0, 1), grouped):
        on_disk = __import__("json").loads((tmp_path / f"run-seed{seed}" / "metrics.json").read_text())
        runtime.validate(on_disk, "ff_metrics")
        assert on_disk["config"]["seed"] == seed and on_disk["config"]["seeds"] is None
        assert on_disk["meta"]["seeds_in_job"] == [0, 1] and on_disk["timing"]["step"] == "fused"
        single = train_ff(tiny_ff_config(data_root, seed=seed, **kw), tmp_path / f"single{seed}")
        c, s = metrics["curves"], single["curves"]
        assert c["step"] == s["step"] and c["lr"] == s["lr"] and c["test_error"] == s["test_error"]
        assert c["train_loss"] == pytest.approx(s["train_loss"], rel=2e-3)
        assert c["sg_loss"] == [pytest.approx(row, rel=2e-2) for row in s["sg_loss"]]
    assert not list(tmp_path.glob("run-seed*/checkpoint*"))
    with pytest.raises(ValueError, match="seeds.train"):  # the single-run runner never drops seeds silently
        __import__("sgbench.families.feedforward.run", fromlist=["x"]).train_ff(
            tiny_ff_config(data_root, seeds=[0, 1], **kw), tmp_path / "y{seed}")
    with pytest.raises(ValueError, match="method .unlock..*one seed per job"):
        train_ff(tiny_ff_config(data_root, seeds=[0, 1], method="unlock"), tmp_path / "x{seed}")
    with pytest.raises(ValueError, match="seeds must be distinct"):
        tiny_ff_config(data_root, seeds=[1, 1]).resolved()


def test_killed_seed_group_resumes_to_the_same_result(data_root, tmp_path, monkeypatch):
    from helpers import tiny_ff_config

    from sgbench import fast
    from sgbench.families.feedforward.seeds import train as train_ff
    cfg = tiny_ff_config(data_root, seeds=[0, 1], iterations=12, eval_every=6, test_limit=100)
    straight = train_ff(cfg, tmp_path / "a{seed}")
    step, calls = fast.StackedStepper.__call__, []

    def killed_after_8(self):
        calls.append(1)
        if len(calls) > 8:  # after step 6's checkpoint, before the run ends
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(fast.StackedStepper, "__call__", killed_after_8)
    with pytest.raises(KeyboardInterrupt):
        train_ff(cfg, tmp_path / "b{seed}")
    assert (tmp_path / "b0" / "checkpoint-seeds.pt").exists() and not (tmp_path / "b0" / "metrics.json").exists()
    monkeypatch.setattr(fast.StackedStepper, "__call__", step)
    resumed = train_ff(cfg, tmp_path / "b{seed}")
    for a, b in zip(straight, resumed):
        assert {k: v for k, v in a["curves"].items() if k != "elapsed_s"} == \
            {k: v for k, v in b["curves"].items() if k != "elapsed_s"}
        assert (a["meta"]["resumed"], b["meta"]["resumed"]) == (False, True)
        assert b["timing"]["wall_time_s"] >= b["timing"]["train_time_s"]


def test_a_diverged_stacked_seed_is_marked_at_its_evaluation():
    from sgbench.families.feedforward.seeds import _divergence
    curves = {"step": [10, 20, 30], "train_loss": [0.5, float("nan"), float("nan")], "test_error": [9.0, 90.0, 90.0]}
    assert _divergence(curves) == {"step": 20, "last_finite": {"train_loss": 0.5, "test_error": 9.0}}
    assert _divergence(curves | {"train_loss": [0.5, 0.4, 0.3]}) is None
