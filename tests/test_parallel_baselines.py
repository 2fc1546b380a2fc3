"""The parallel family's baselines (issue #15): data parallelism (DDP) and real pipeline schedules
(GPipe, 1F1B) against single-process backprop, the stored late-SG variant, restart and divergence."""
import dataclasses
import json
import types

import pytest
import torch
import torch.nn.functional as F
from helpers import write_learnable_mnist

from sgbench import runtime
from sgbench.data import as_input
from sgbench.dni import DNI, MLPSG
from sgbench.families.feedforward.run import (
    BatchStream,
    build_net,
    load_run_data,
    lr_schedule,
)
from sgbench.families.parallel.config import METHODS, ParallelConfig
from sgbench.families.parallel.model import (
    balanced_split,
    predicted_step_s,
    stage_bounds,
)
from sgbench.families.parallel.protocols import LateSG
from sgbench.families.parallel.run import train_parallel
from sgbench.families.parallel.stages import Stage

# Float tolerance: the same arithmetic in another order (all-reduce sums, micro-batch accumulation
# across processes); float32 after a few Adam steps.
ATOL = 1e-5


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_learnable_mnist(tmp_path_factory.mktemp("data"))


def config(data_root, **kw):
    base = dict(dataset="mnist", layers=2, iterations=6, batch_size=32, lr=1e-3, eval_every=3, test_limit=100,
                device="cpu", tier="smoke", data_root=str(data_root), threads=1, save_params=True, targets=[50.0])
    return ParallelConfig(**(base | kw)).resolved()


def reference(cfg, shares: int = 1, microbatches: int = 1):
    """Single-process backprop on the run's global batches: the loss of each step is the mean of the
    shares' (or micro-batches') mean losses, each share through the net on its own (BatchNorm
    statistics per share, as each worker / micro-batch has them). Returns (net, last step's grads)."""
    torch.manual_seed(cfg.seed)
    data, (train_x, train_y), _ = load_run_data(cfg, torch.device("cpu"))
    net = build_net(dataclasses.replace(cfg, method="backprop").net_config(), data)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = lr_schedule(opt, cfg)
    stream = BatchStream(len(train_y), cfg.global_batch(len(train_y)), cfg.seed)
    for _ in range(cfg.iterations):
        idx = stream.next()
        x, y = as_input(train_x[idx]), train_y[idx]
        opt.zero_grad(set_to_none=True)
        parts = shares * microbatches
        for xs, ys in zip(x.chunk(parts), y.chunk(parts)):
            (F.cross_entropy(net(xs), ys) / parts).backward()
        opt.step()
        sched.step()
    return net


def assert_params_match(saved: dict, module, what: str):
    for name, p in module.named_parameters():
        assert torch.allclose(saved["params"][name], p.detach(), atol=ATOL), f"{what}: parameter {name} differs"
        if p.grad is not None:
            assert torch.allclose(saved["grads"][name], p.grad, atol=ATOL), f"{what}: gradient {name} differs"


def test_every_method_is_a_row_and_an_unknown_one_is_refused(data_root):
    assert set(METHODS) == {"backprop", "gpipe", "1f1b", "ddp_split", "ddp_keep", "dni", "cdni"}
    with pytest.raises(ValueError, match="unknown method 'pipedream'"):
        config(data_root, method="pipedream")


@pytest.mark.parametrize("bad, message", [
    (dict(method="gpipe", microbatches=5), "microbatches must divide batch_size"),
    (dict(method="ddp_split", workers=3), "ddp_split cuts batch_size into 3 shares"),
    (dict(method="gpipe", late_sg="stored"), "late_sg applies to dni / cdni only"),
    (dict(method="backprop", workers=5), "workers must be between 1 and the number of units"),
    (dict(targets=[0.0]), "targets are test errors"),
])
def test_bad_baseline_config_is_refused(data_root, bad, message):
    with pytest.raises(ValueError, match=message):
        config(data_root, **bad)


def test_ddp_split_is_single_process_backprop_on_the_global_batch(data_root, tmp_path):
    cfg = config(data_root, method="ddp_split", workers=2)
    metrics = train_parallel(cfg, tmp_path)
    net = reference(cfg, shares=2)
    for rank in (0, 1):  # every replica ends with the same parameters, those of one process
        saved = torch.load(tmp_path / f"params-{rank}.pt")
        assert_params_match(saved, net, f"ddp_split worker {rank}")
    assert metrics["model"]["global_batch"] == 32 and metrics["model"]["protocol"] == "data_parallel"


@pytest.mark.parametrize("method", ["gpipe", "1f1b"])
def test_pipeline_schedules_are_backprop_over_the_microbatches(data_root, tmp_path, method):
    cfg = config(data_root, method=method, workers=2, microbatches=4, split=[1, 2])
    train_parallel(cfg, tmp_path)
    net = reference(cfg, microbatches=4)
    for rank, (lo, hi) in enumerate(stage_bounds([1, 2])):
        saved = torch.load(tmp_path / f"params-{rank}.pt")
        assert_params_match(saved, Stage(net, lo, hi), f"{method} stage {rank}")


@pytest.mark.parametrize("late_sg", ["reevaluate", "stored"])
def test_the_top_block_of_a_decoupled_stage_learns_from_its_sg(data_root, tmp_path, late_sg):
    """No loss reaches a stage below the head: its top block learns only from the SG it injects at once."""
    cfg = config(data_root, method="cdni", workers=2, split=[1, 2], late_sg=late_sg)
    train_parallel(cfg, tmp_path)
    torch.manual_seed(cfg.seed)
    data, _, _ = load_run_data(cfg, torch.device("cpu"))
    initial = dict(Stage(build_net(cfg.net_config(), data), 0, 1).named_parameters())
    saved = torch.load(tmp_path / "params-0.pt")
    moved = [n for n, p in saved["params"].items() if n.startswith("blocks.") and not torch.equal(p, initial[n])]
    assert sorted(moved) == sorted(n for n in initial if n.startswith("blocks.")), moved


def test_ddp_keep_learns_and_writes_valid_json(data_root, tmp_path):
    metrics = train_parallel(config(data_root, method="ddp_keep", workers=2, iterations=40, eval_every=10,
                                    save_params=False), tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    runtime.validate(on_disk, "parallel_metrics")
    assert on_disk["status"] == "completed" and on_disk["model"]["global_batch"] == 64
    loss = metrics["curves"]["train_loss"]
    assert loss[-1] < 0.5 * loss[0], loss
    assert metrics["timing"]["allreduce_s"] > 0 and metrics["timing"]["time_to_target"][0]["seconds"] is not None


def test_stored_late_sg_learns_towards_the_late_gradient():
    """The stored variant regresses the prediction it injected (parameters of that moment) towards the
    gradient that arrives a step later: its gradient is exactly that of the SG loss at the old
    parameters, and repeated, the SG model's prediction approaches the (per-example) target."""
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU())
    boundary = DNI(MLPSG(6, hidden_layers=1, hidden_dim=16))
    net = types.SimpleNamespace(blocks=torch.nn.ModuleList([block]), boundaries=torch.nn.ModuleList([boundary]),
                                head=None, num_classes=10, conditioned=False)
    stage = Stage(net, 0, 1)  # one block topped by its DNI: the top boundary of a cut
    late = LateSG(stage, "stored")
    opt = torch.optim.Adam(boundary.parameters(), lr=0.01)
    x, target = torch.randn(8, 5), torch.randn(8, 6) / 8  # a fixed batch-mean gradient from above

    def sg_error():
        with torch.no_grad():
            return (boundary.synthetic_gradient(block(x)) - 8 * target).pow(2).mean().item()

    before, kept_params, kept_h = sg_error(), None, None
    for step in range(200):
        params_now = {k: v.clone() for k, v in boundary.state_dict().items()}
        out = stage(x.clone().requires_grad_())
        if late.kept is not None:
            opt.zero_grad(set_to_none=True)
            late.learn(target)
            if step == 2:  # check once: the gradient of the SG loss at the parameters of the prediction
                old = DNI(MLPSG(6, hidden_layers=1, hidden_dim=16))
                old.load_state_dict(kept_params)
                old.learn(kept_h, None, target)
                for (name, p), q in zip(boundary.named_parameters(), old.parameters()):
                    assert torch.allclose(p.grad, q.grad, atol=1e-6), name
            opt.step()
        kept_params = params_now
        kept_h = block(x).detach()
        late.keep(out, None)
    assert sg_error() < 0.2 * before, (before, sg_error())


def test_a_rerun_restarts_and_says_so(data_root, tmp_path, caplog):
    cfg = config(data_root, method="backprop", workers=1, iterations=3, eval_every=3, save_params=False)
    first = train_parallel(cfg, tmp_path)
    assert first["meta"]["restarted"] is False and first["meta"]["resumed"] is False
    (tmp_path / ".started").write_text("{}")  # as a killed attempt leaves it
    (tmp_path / "metrics.json").unlink()
    with caplog.at_level("WARNING"):
        again = train_parallel(cfg, tmp_path)
    assert again["meta"]["restarted"] is True
    assert "restarts from scratch by design" in caplog.text
    assert not (tmp_path / ".started").exists()


@pytest.mark.parametrize("method, workers", [("cdni", 2), ("ddp_split", 2)])
def test_a_non_finite_loss_ends_the_run_as_diverged(data_root, tmp_path, method, workers):
    cfg = config(data_root, method=method, workers=workers, lr=1e12, iterations=60, eval_every=5, save_params=False,
                 sg_hidden_dim=16)
    metrics = train_parallel(cfg, tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    runtime.validate(on_disk, "parallel_metrics")
    assert on_disk["status"] == "diverged" and 1 <= on_disk["diverged"]["step"] <= 60
    assert all(s < on_disk["diverged"]["step"] for s in on_disk["curves"]["step"])
    assert metrics["timing"]["train_time_s"] > 0


def test_the_analytic_model_for_every_protocol():
    profiles = {8: [1.0, 0.5, 0.5, 0.2], 32: [2.0, 1.0, 1.0, 0.4]}  # per-unit seconds at 8 and 32 examples
    cut = [0.3, 0.3, 0.3, 0.0]
    assert predicted_step_s("backprop", profiles, cut, [4], 32, 0.1) == pytest.approx(4.4)
    assert predicted_step_s("backprop", profiles, cut, [1, 3], 32, 0.1) == pytest.approx(4.6)
    assert predicted_step_s("cdni", profiles, cut, [1, 3], 32, 0.1) == pytest.approx(max(2.3, 2.4) + 0.2)
    # GPipe, 4 micro-batches of 8 on 2 stages [1, 3]: 5 slots of the slower stage (0.5 + 0.5 + 0.2 = 1.2)
    assert predicted_step_s("gpipe", profiles, cut, [1, 3], 32, 0.1, microbatches=4) == pytest.approx(5 * 1.2 + 0.05)
    assert predicted_step_s("1f1b", profiles, cut, [4], 32, 0.1, microbatches=4) == pytest.approx(4 * 2.2)
    # DDP: the whole net on a share (split: 16 examples, halfway between the profiles) plus the all-reduce
    assert predicted_step_s("ddp_split", profiles, cut, [4], 32, 0.1, allreduce_s=0.7, workers=2) == pytest.approx(
        2.2 + (4.4 - 2.2) * (16 - 8) / (32 - 8) + 0.7)
    assert predicted_step_s("ddp_keep", profiles, cut, [4], 32, 0.1, allreduce_s=0.7, workers=2) == pytest.approx(4.4 + 0.7)
    assert predicted_step_s("ddp_keep", profiles, cut, [4], 32, 0.1, allreduce_s=0.7, workers=1) == pytest.approx(4.4)
    assert balanced_split([4, 1, 1, 1, 1], 2) == [1, 4]


def test_pipelined_model_counts_one_optimizer_step():
    profiles = {8: [1.0, 0.5, 0.5, 0.2], 32: [2.0, 1.0, 1.0, 0.4]}
    opt = [0.1, 0.1, 0.1, 0.0]
    # micro-batch compute without the optimizer: [0.9, 0.4, 0.4, 0.2]; stages [1, 3]: 0.9 vs 1.0
    assert predicted_step_s("gpipe", profiles, [0.0] * 4, [1, 3], 32, 0.0, microbatches=4, opt_s=opt) == pytest.approx(
        5 * 1.0 + 0.2)


@pytest.fixture(scope="module")
def real_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cdni-k2")
    return train_parallel(config(data_root, method="cdni", workers=2, iterations=20, eval_every=5, save_params=False,
                                 targets=[50.0, 20.0], sg_hidden_dim=16), out)


def variant(m, method, workers, seed, speed, seconds, late_sg="reevaluate"):
    """A copy of a real run's metrics relabelled as another method / K / seed with other timings."""
    m = json.loads(json.dumps(m))
    m["config"].update(method=method, workers=workers, seed=seed,
                       late_sg=late_sg if method in ("dni", "cdni") else "reevaluate")
    m["model"]["split"] = [m["model"]["units"]] if workers == 1 or method.startswith("ddp") else m["model"]["split"]
    m["timing"].update(samples_per_s=speed)
    m["timing"]["time_to_target"] = [{"target_error": t, "seconds": s, "step": None if s is None else 5}
                                     for t, s in zip((50.0, 20.0), seconds)]
    if method.startswith("ddp"):
        m["timing"]["allreduce_s"] = 0.001
    return m


def test_tables_targets_model_and_figures(real_run, tmp_path):
    from sgbench.families.parallel import figures, tables
    paths = []
    grid = [("backprop", 1, 1000.0, (1.0, None)), ("backprop", 2, 800.0, (1.5, None)),
            ("ddp_keep", 2, 1900.0, (0.6, 2.0)), ("gpipe", 2, 900.0, (1.2, None)),
            ("cdni", 2, 1200.0, (None, None))]
    for seed in (0, 1):
        for method, k, speed, seconds in grid:
            path = tmp_path / "runs" / f"{method}-k{k}-{seed}" / "metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(variant(real_run, method, k, seed, speed + 10 * seed, seconds)))
            paths.append(path)
    out = tables.tables(paths, "smoke")
    stats = out["csv"].set_index(["method", "workers"])
    assert stats.loc[("ddp_keep", 2), "speedup"] == pytest.approx(1905 / 1005)
    assert stats.loc[("ddp_keep", 2), "n"] == 2 and stats.loc[("ddp_keep", 2), "samples_per_s_ci95"] > 0
    # backprop K = 1 reaches 50 % but never 20 %: 50 % is the headline target, 20 % is left out
    assert set(stats["target_error"]) == {50.0}
    assert stats.loc[("ddp_keep", 2), "time_to_target_s"] == pytest.approx(0.6)
    assert stats.loc[("cdni", 2), "time_to_target_s"] == float("inf") and stats.loc[("cdni", 2), "reached"] == "0/2"
    assert "| cdni (reevaluate) | 2 |" in out["md"] and "not reached (0/2)" in out["md"]
    assert "(left out): 20 %" in out["md"]
    model = out["model"]
    assert model[model["method"] == "ddp_keep"]["workers"].max() == 16   # data parallel: any K
    assert model[model["method"] == "gpipe"]["workers"].max() == 3        # stages: at most the units
    checked = model.dropna(subset=["measured_over_predicted"])
    assert set(zip(checked["method"], checked["workers"])) == {(m, k) for m, k, *_ in grid}
    tables.aggregate(paths, "smoke", tmp_path / "tables")
    drawn = figures.draw("smoke", tmp_path / "tables", tmp_path / "figures")
    assert all(p.stat().st_size > 5000 and p.with_suffix(".pdf").exists() for p in drawn)
