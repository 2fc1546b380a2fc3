"""RNN runs: tasks, truncation, the bootstrapped SG target, the curriculum, end to end."""
import json
import subprocess
import sys

import pytest
import torch

from sgbench import runtime
from sgbench.families.rnn.run import (
    RNNConfig,
    SequenceNet,
    train_rnn,
    train_window,
    window_errors,
)
from sgbench.tasks import (
    Curriculum,
    EpisodeStream,
    Task,
    copy_episode,
    repeat_copy_episode,
)


def make_net(method="bptt", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = RNNConfig(method=method, hidden_size=8, **kw)
    task = Task("copy")
    return SequenceNet(task.in_dim, task.out_dim, cfg), task


def grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


# ------------------------------------------------------------------ tasks
def test_copy_episode_layout():
    g = torch.Generator().manual_seed(0)
    x, y, mask = copy_episode(3, g)
    assert x.shape == (7, 9) and y.shape == (7, 8)
    assert torch.equal(y[4:], x[:3, :8])  # the targets are the inputs
    assert x[3, 8] == 1 and x[:, 8].sum() == 1  # one delimiter, after the sequence
    assert x[4:].abs().sum() == 0  # nothing to read while answering
    assert mask.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_repeat_copy_episode_layout():
    g = torch.Generator().manual_seed(0)
    x, y, mask = repeat_copy_episode(2, 3, g, repeat_norm=10.0)
    assert x.shape == (2 + 1 + 6 + 1, 9) and y.shape == (10, 9)
    assert x[2, 8] == pytest.approx(0.3)  # R / repeat_norm on the count channel
    assert torch.equal(y[3:9, :8], x[:2, :8].repeat(3, 1))  # the sequence R times
    assert y[9].tolist() == [0] * 8 + [1] and y[:9, 8].sum() == 0  # the end marker, last
    assert mask.tolist() == [0, 0, 0] + [1] * 7


def test_repeat_copy_levels_raise_n_and_r_in_turn():
    levels = [Task("repeat_copy").level(i) for i in range(5)]
    assert [(lv["N"], lv["R"], lv["length"]) for lv in levels] == [(1, 1, 1), (2, 1, 2), (2, 2, 4), (3, 2, 6), (3, 3, 9)]
    assert Task("copy").level(4) == {"N": 5, "R": None, "length": 5}


def test_stream_is_seeded_and_carries_episodes_across_windows():
    a, b, c = (EpisodeStream(Task("copy"), 4, seed) for seed in (1, 1, 2))
    wa = [a.window(3, 1) for _ in range(5)]
    wb = [b.window(3, 1) for _ in range(5)]
    assert all(torch.equal(u, v) for x, y in zip(wa, wb) for u, v in zip(x, y))
    assert not torch.equal(torch.cat([w[0] for w in wa]), torch.cat([c.window(3, 1)[0] for _ in range(5)]))
    # 15 steps of N=2 copy episodes (5 steps each): 3 whole episodes per stream, back to back
    x = torch.cat([w[0] for w in wa])
    assert x[:, :, 8].sum(0).tolist() == [3.0] * 4
    assert torch.nonzero(x[:, 0, 8]).flatten().tolist() == [2, 7, 12]


def test_finish_window_sums_each_episode_error():
    stream = EpisodeStream(Task("copy"), 2, 0)
    done = []
    for _ in range(4):  # copy N=2: 5 steps, 2 output steps; 1 bit per output step -> 2 bits per episode
        _, _, mask = stream.window(3, 1)
        done += stream.finish_window(mask * 1.0)
    assert done == [(1, 2.0)] * 4  # 12 steps per stream: 2 whole episodes each


# ------------------------------------------------------------------ curriculum
def test_curriculum_advances_below_threshold_and_not_before():
    cur = Curriculum(threshold=0.15, window=3)
    for bits in (0.1, 0.1):
        cur.record(0, bits)
    assert not cur.maybe_advance() and cur.level == 0  # below threshold, but too few episodes yet
    cur.record(0, 0.2)  # mean 0.133 < 0.15 over a full window
    assert cur.maybe_advance() and (cur.level, cur.solved) == (1, 0)


def test_curriculum_needs_the_mean_below_threshold_at_the_current_level():
    cur = Curriculum(threshold=0.15, window=3)
    for bits in (0.5, 0.1, 0.1):
        cur.record(0, bits)
    assert not cur.maybe_advance()  # mean 0.233: above the threshold
    cur.record(0, 0.1)  # the window now holds 0.1, 0.1, 0.1
    cur.record(1, 5.0)  # an episode of another level does not count
    assert cur.maybe_advance() and (cur.level, cur.solved) == (1, 0)
    assert cur.recent == [] and not cur.maybe_advance()  # the next level starts from no evidence


# ------------------------------------------------------------------ truncation and the SG target
def truncated_grads(model, x, y, mask, T):
    """Gradients of the whole stream's loss, summed over windows of T steps (no update: lr 0)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    total = [torch.zeros_like(p) for p in model.parameters()]
    state = model.initial_state(x.shape[1], "cpu")
    for t in range(0, len(x), T):
        _, state, _ = train_window(model, opt, state, x[t:t + T], y[t:t + T], mask[t:t + T])
        total = [a + b for a, b in zip(total, grads(model))]
    return total


def test_truncation_at_or_beyond_the_episode_length_is_full_bptt():
    model, task = make_net("bptt")
    x, y, mask = EpisodeStream(task, 3, 0).window(5, 1)  # one copy episode of N=2: 5 steps
    x, y, mask = x[:5], y[:5], mask[:5]
    model.zero_grad()
    logits, _, _ = model(x, model.initial_state(3, "cpu"))
    (window_errors(logits, y, mask).sum() / 3).backward()
    full = grads(model)
    for T in (5, 8):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(truncated_grads(model, x, y, mask, T), full))
    short = truncated_grads(model, x, y, mask, 2)  # the copy dependency (3 steps) crosses a boundary
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(short, full))


def test_sg_target_is_next_windows_true_gradient_plus_its_synthetic_gradient():
    model, task = make_net("dni", sg_scale=0.7)
    with torch.no_grad():  # a non-zero SG, so the bootstrap term is there to check
        model.boundary.sg_model.net[-1].weight.normal_(0, 0.3)
        model.boundary.sg_model.net[-1].bias.normal_(0, 0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the parameters fixed between windows
    x, y, mask = EpisodeStream(task, 4, 0).window(6, 1)
    _, s1, sg1 = train_window(model, opt, model.initial_state(4, "cpu"), x[:3], y[:3], mask[:3])
    _, s2, sg2 = train_window(model, opt, s1, x[3:], y[3:], mask[3:])

    # the target by hand: d/ds1 of [the next window's loss + <SG at its end (as injected), its end state>]
    leaf = s1.detach().requires_grad_()
    logits, _, end = model(x[3:], leaf)
    injected = 0.7 * model.boundary.sg_model(end.detach()).detach() / 4
    objective = window_errors(logits, y[3:], mask[3:]).sum() / 4 + (injected * end).sum()
    expected = torch.autograd.grad(objective, leaf)[0] * 4  # per example
    assert torch.allclose(sg2, injected * 4, atol=1e-6)
    assert torch.allclose(s1.grad * 4, expected, atol=1e-5)
    true_only = torch.autograd.grad(window_errors(*model(x[3:], leaf)[:1], y[3:], mask[3:]).sum() / 4, leaf)[0] * 4
    assert not torch.allclose(expected, true_only, atol=1e-4)  # the bootstrap term mattered
    sg1_per_example = sg1 / 0.7
    assert float(model.boundary.last_sg_loss) == pytest.approx(float(((sg1_per_example - expected) ** 2).mean()), rel=1e-4)


def test_dni_aux_trains_a_head_on_the_future_synthetic_gradient():
    model, task = make_net("dni_aux")
    with torch.no_grad():
        model.boundary.sg_model.net[-1].bias.fill_(0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y, mask = EpisodeStream(task, 4, 0).window(3, 1)
    train_window(model, opt, model.initial_state(4, "cpu"), x, y, mask)
    assert model.aux_head.weight.grad is not None and model.aux_head.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ end to end
def tiny(tmp_path, name, **kw):
    cfg = RNNConfig(**{"task": "copy", "method": "dni", "T": 2, "timesteps": 400, "batch_size": 4,
                       "hidden_size": 16, "curriculum_window": 5, "log_points": 4, "device": "cpu",
                       "threads": 1, **kw})
    return train_rnn(cfg, tmp_path / name)


@pytest.mark.parametrize("method,task", [("bptt", "copy"), ("dni", "copy"), ("dni_aux", "repeat_copy")])
def test_tiny_run_writes_valid_repeatable_metrics(tmp_path, method, task):
    a = tiny(tmp_path, "a", method=method, task=task)
    b = tiny(tmp_path, "b", method=method, task=task)
    on_disk = json.loads((tmp_path / "a" / "metrics.json").read_text())
    runtime.validate(on_disk, "rnn_metrics")
    assert a["curves"] == {**b["curves"], "elapsed_s": a["curves"]["elapsed_s"]}
    assert a["final"] == b["final"] and a["curriculum"] == b["curriculum"]
    assert len(a["curves"]["timestep"]) == 4 and a["curves"]["timestep"][-1] == 400
    has_sg = method != "bptt"
    assert all((v is not None) == has_sg for v in a["curves"]["boundary_sg_norm"])
    assert all(v is not None and v > 0 for v in a["curves"]["boundary_true_grad_norm"])


def test_curriculum_advances_in_a_run_on_an_easy_threshold(tmp_path):
    m = tiny(tmp_path, "easy", method="bptt", threshold=100.0)  # any error passes: a level per 5 episodes
    lengths = [lv["length"] for lv in m["curriculum"]]
    assert lengths[:3] == [1, 2, 3] and m["final"]["largest_length_solved"] == lengths[-2]
    assert [lv["timestep"] for lv in m["curriculum"]] == sorted(lv["timestep"] for lv in m["curriculum"])


def test_cli_runs_and_refuses_unknown_methods(tmp_path):
    base = [sys.executable, "-m", "sgbench", "train-rnn", "--out", str(tmp_path / "run"), "--T", "2",
            "--timesteps", "40", "--hidden-size", "8", "--batch-size", "2", "--quiet"]
    ok = subprocess.run(base + ["--method", "bptt"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["T"] == 2
    bad = subprocess.run(base + ["--method", "rtrl"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown method 'rtrl': choose one of bptt, dni, dni_aux" in bad.stderr
