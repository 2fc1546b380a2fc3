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
