"""sgbench.optim.Adam: torch's Adam, bit for bit, with a CPU step that works slice by slice."""
import copy

import pytest
import torch

from sgbench import optim


def params(seed=0):
    """Tensors larger than a slice (a remainder too), a small one, a non-contiguous one, a 0-dim one."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(3 * optim.CHUNK + 1234,), (1024, 700), (37,), ()]
    ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    ps.append(torch.nn.Parameter(torch.randn(64, 48, generator=g).t()))  # non-contiguous
    return ps


def grads(ps, step):
    g = torch.Generator().manual_seed(100 + step)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype).as_strided(p.shape, p.stride())


def test_the_sliced_step_is_torchs_step_bit_for_bit():
    """Parameters and moments equal torch.optim.Adam's after every step, through a change of learning
    rate, a parameter without a gradient (skipped, its step count too) and a state-dict round trip in
    both directions (a checkpoint of either loads into the other)."""
    ours, theirs = params(), params()
    a = optim.Adam([{"params": ours[:3], "lr": 1e-3}, {"params": ours[3:], "lr": 3e-5}])
    b = torch.optim.Adam([{"params": theirs[:3], "lr": 1e-3}, {"params": theirs[3:], "lr": 3e-5}])
    for step in range(6):
        grads(ours, step), grads(theirs, step)
        if step == 2:
            ours[2].grad = theirs[2].grad = None
        if step == 3:
            a.param_groups[0]["lr"] = b.param_groups[0]["lr"] = 2e-4
        a.step(), b.step()
        assert all(torch.equal(p, q) for p, q in zip(ours, theirs)), step
    state_a, state_b = a.state_dict(), b.state_dict()
    assert all(torch.equal(state_a["state"][i][k], state_b["state"][i][k])
               for i in state_b["state"] for k in ("step", "exp_avg", "exp_avg_sq"))
    a.load_state_dict(copy.deepcopy(state_b)), b.load_state_dict(copy.deepcopy(state_a))
    grads(ours, 9), grads(theirs, 9)
    a.step(), b.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs))


def test_options_the_sliced_step_does_not_cover_are_torchs_own_step():
    """amsgrad and weight decay (and every option but the defaults) take torch's step: still equal."""
    for kw in ({"amsgrad": True}, {"weight_decay": 0.1}, {"maximize": True}, {"foreach": True}):
        ours, theirs = params(1), params(1)
        a, b = optim.Adam(ours, lr=1e-3, **kw), torch.optim.Adam(theirs, lr=1e-3, **kw)
        assert not a._chunkable()
        for step in range(3):
            grads(ours, step), grads(theirs, step)
            a.step(), b.step()
        assert all(torch.equal(p, q) for p, q in zip(ours, theirs)), kw


def test_a_sparse_gradient_is_refused_as_torch_refuses_it():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.zeros(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        optim.Adam([p]).step()


# ---------------------------------------------------------------- the adam setting of a feed-forward run
def test_make_optimizer_builds_the_adam_the_run_names():
    """for-loop: sgbench.optim.Adam (torch's single-tensor numbers); fused: torch's one-pass kernel, the
    same update to rounding; anything else is refused naming both."""
    from sgbench import fast
    cpu = torch.device("cpu")
    loop_opt = fast.make_optimizer(params(), 1e-3, "eager", cpu)
    fused_opt = fast.make_optimizer(params(), 1e-3, "eager", cpu, "fused")
    assert type(loop_opt) is optim.Adam and not loop_opt.param_groups[0]["fused"]
    assert type(fused_opt) is torch.optim.Adam and fused_opt.param_groups[0]["fused"]
    a, b = loop_opt.param_groups[0]["params"], fused_opt.param_groups[0]["params"]
    for step in range(5):
        grads(a, step), grads(b, step)
        loop_opt.step(), fused_opt.step()
    assert all(torch.allclose(p, q, rtol=0, atol=1e-6) for p, q in zip(a, b)), "fused Adam is Adam"
    with pytest.raises(ValueError, match="unknown adam 'apex'; choose one of for-loop, fused"):
        fast.make_optimizer(params(), 1e-3, "eager", cpu, "apex")


def test_a_fused_adam_run_records_its_adam_has_its_own_name_and_is_not_pooled(data_root, tmp_path):
    import json

    from helpers import tiny_ff_config

    from sgbench import runtime
    from sgbench.families import get
    from sgbench.families.diagnostics.config import run_name as diagnostics_name
    from sgbench.families.feedforward.config import run_name
    from sgbench.families.feedforward.run import train_ff
    from sgbench.families.feedforward.tables import collect
    base = dict(iterations=10, eval_every=5)
    loop_m = train_ff(tiny_ff_config(data_root, **base), tmp_path / "loop")
    fused_m = train_ff(tiny_ff_config(data_root, adam="fused", seed=1, **base), tmp_path / "fused")
    runtime.validate(json.loads((tmp_path / "fused" / "metrics.json").read_text()), "ff_metrics")
    assert loop_m["config"]["adam"] == "for-loop" and fused_m["config"]["adam"] == "fused"
    assert fused_m["final"]["test_error"] < 90, "a fused-Adam DNI run learns"
    point = dict(dataset="mnist", arch="fcn", layers=3, method="dni", seed=0)
    assert run_name(point) == run_name(point | {"adam": "for-loop"}) == "mnist-fcn3-dni-seed0"
    assert run_name(point | {"precision": "bf16", "adam": "fused"}) == "mnist-fcn3-dni-bf16-fused-adam-seed0"
    assert diagnostics_name(point | {"adam": "fused"}) == "mnist-fcn3-dni-fused-adam-seed0"
    with pytest.raises(runtime.MetricsError, match="several adam settings.*for-loop: 1, fused: 1.*on their own"):
        collect([tmp_path / "loop" / "metrics.json", tmp_path / "fused" / "metrics.json"])
    runs, _ = collect([tmp_path / "fused" / "metrics.json"])
    assert list(runs["adam"]) == ["fused"]
    # a finished for-loop run is not the fused run (nor the reverse); one recorded before the setting existed
    # is the for-loop run, not retrained
    with pytest.raises(ValueError, match="differs in adam: 'for-loop' there, 'fused' here"):
        runtime.finished_run(tmp_path / "loop", tiny_ff_config(data_root, adam="fused", **base).resolved(),
                             get("feedforward"), "fix")
    path = tmp_path / "loop" / "metrics.json"
    recorded = json.loads(path.read_text())
    del recorded["config"]["adam"]
    path.write_text(json.dumps(recorded))
    assert runtime.finished_run(tmp_path / "loop", tiny_ff_config(data_root, **base).resolved(),
                                get("feedforward"), "fix") == recorded
