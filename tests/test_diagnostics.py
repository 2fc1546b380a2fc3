"""Issue #8 diagnostics: the SG fidelity probe, DNI placement, warm-up, and their tables / figures / report."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_ff_config
from torch import nn

from sgbench import runtime
from sgbench.analysis import tables as report
from sgbench.families import aggregate, draw
from sgbench.families.feedforward.run import FFConfig, RunInterrupted, train_ff
from sgbench.families.rnn.run import RNNConfig, SequenceNet
from sgbench.fidelity import compare, ff_fidelity, rnn_fidelity
from sgbench.nets import FeedForwardNet, SGSpec, placed_boundaries
from sgbench.tasks import Task

IN_SHAPE = (1, 6, 6)


class OracleSG(nn.Module):
    """An SG model that returns a fixed per-example gradient (B x the batch-mean one)."""

    def __init__(self, true_grad):
        super().__init__()
        self.true_grad = true_grad

    def forward(self, h, context=None):
        return self.true_grad * h.shape[0]


def tiny_batch(n=32, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *IN_SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


def bn_buffers(net):
    return [b.clone() for name, b in net.named_buffers() if "running" in name]


@pytest.mark.parametrize("method", ["dni", "cdni"])
def test_probe_with_an_oracle_sg_reports_cosine_one_and_no_error(method):
    torch.manual_seed(0)
    net = FeedForwardNet("fcn", 4, method, IN_SHAPE, sg=SGSpec(hidden_layers=1, hidden_dim=8))
    x, y = tiny_batch()
    for boundary, grad in zip(net.boundaries, net.exact_boundary_gradients(x, y)):
        boundary.sg_model = OracleSG(grad)
    for row in ff_fidelity(net, x, y):
        assert row["cosine"] == pytest.approx(1.0, abs=1e-6)
        assert row["rel_error"] == pytest.approx(0.0, abs=1e-6)
        assert row["norm_ratio"] == pytest.approx(1.0, abs=1e-6)


def test_probe_changes_no_state_and_sees_the_zero_initial_sg():
    torch.manual_seed(0)
    net = FeedForwardNet("fcn", 3, "dni", IN_SHAPE, sg=SGSpec(hidden_layers=1, hidden_dim=8))
    x, y = tiny_batch()
    params, buffers = [p.clone() for p in net.parameters()], bn_buffers(net)
    rows = ff_fidelity(net, x, y)
    assert all(r["cosine"] == 0.0 and r["rel_error"] == pytest.approx(1.0) and r["norm_ratio"] == 0.0 for r in rows)
    assert all(torch.equal(a, b) for a, b in zip(params, net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(buffers, bn_buffers(net)))
    assert all(p.grad is None for p in net.parameters())


def test_compare_measures_over_the_flattened_batch():
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = compare(torch.tensor([[2.0, 0.0], [0.0, 0.0]]), true)
    assert got["cosine"] == pytest.approx(2 / (2 * 2 ** 0.5))
    assert got["rel_error"] == pytest.approx(2 ** 0.5 / 2 ** 0.5)
    assert got["norm_ratio"] == pytest.approx(2 / 2 ** 0.5)
    assert compare(-true, true)["cosine"] == pytest.approx(-1.0)


@pytest.mark.parametrize("layers, placement, expected", [
    (6, "every", [1, 1, 1, 1, 1, 1]), (6, "every_second", [0, 1, 0, 1, 0, 1]), (6, "middle", [0, 0, 1, 0, 0, 0]),
    (10, "middle", [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]), (3, "middle", [0, 1, 0]), (1, "every_second", [1]),
])
def test_placements(layers, placement, expected):
    assert placed_boundaries(layers, placement) == [bool(e) for e in expected]


def test_single_middle_dni_leaves_every_other_boundary_exact_backprop():
    """Gradient check on a tiny net: with the (zero-initialised) middle DNI, the blocks above it and the
    head get exactly backprop's gradients, the blocks at and below it get the zero synthetic gradient;
    with an oracle SG there, every parameter gets backprop's gradient."""
    torch.manual_seed(0)
    net = FeedForwardNet("fcn", 4, "dni", IN_SHAPE, sg=SGSpec(hidden_layers=1, hidden_dim=8), placement="middle")
    assert net.placed == [False, True, False, False]
    assert sum(p.numel() for b, on in zip(net.boundaries, net.placed) if not on for p in b.parameters()) == 0
    x, y = tiny_batch()
    reference = copy.deepcopy(net)
    reference.set_exact(True)  # every boundary passes the true gradient: plain backprop for the network
    for m in (net, reference):
        F.cross_entropy(m(x, y), y).backward()
    below = {id(p) for block in net.blocks[:2] for p in block.parameters()}
    for p, ref in zip(net.model_parameters(), reference.model_parameters()):
        assert ref.grad is not None and ref.grad.abs().sum() > 0
        if id(p) in below:
            assert p.grad is None or torch.equal(p.grad, torch.zeros_like(p.grad))
        else:
            torch.testing.assert_close(p.grad, ref.grad, atol=1e-7, rtol=0)

    oracle = copy.deepcopy(reference)
    oracle.set_exact(False)
    oracle.zero_grad(set_to_none=True)
    oracle.boundaries[1].sg_model = OracleSG(oracle.exact_boundary_gradients(x, y)[1])
    F.cross_entropy(oracle(x, y), y).backward()
    for p, ref in zip(oracle.model_parameters(), reference.model_parameters()):
        torch.testing.assert_close(p.grad, ref.grad, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- runs

def tiny(data_root, **kw):
    return tiny_ff_config(data_root, **({"layers": 3} | kw))


def results(metrics):
    return {k: v for k, v in metrics["curves"].items() if k != "elapsed_s"}, metrics["final"]


def test_warmup_all_is_the_backprop_run_and_warmup_zero_the_dni_run(data_root, tmp_path):
    backprop = train_ff(tiny(data_root, method="backprop"), tmp_path / "bp")
    warm_all = train_ff(tiny(data_root, warmup=1.0), tmp_path / "w1")
    dni = train_ff(tiny(data_root), tmp_path / "dni")
    warm_none = train_ff(tiny(data_root, warmup=0.0, probe_every=0), tmp_path / "w0")
    for key in ("test_error", "train_loss"):
        assert warm_all["curves"][key] == backprop["curves"][key]
        assert warm_none["curves"][key] == dni["curves"][key]
    assert warm_all["curves"]["test_error"] != dni["curves"]["test_error"]
    assert all(v > 0 for v in warm_all["curves"]["sg_loss"][0]), "the SG models learn during warm-up"


def test_probe_curves_in_metrics_and_resume_with_probe_and_warmup(data_root, tmp_path):
    cfg = tiny(data_root, method="cdni", dni_placement="every_second", warmup=0.3, probe_every=15, probe_size=64)
    straight = train_ff(cfg, tmp_path / "straight")
    runtime.validate(json.loads((tmp_path / "straight" / "metrics.json").read_text()), "ff_metrics")
    c = straight["curves"]
    assert c["probe_step"] == [15, 30, 40]
    assert [row[0] for row in c["probe_cosine"]] == [None, c["probe_cosine"][1][0], None]
    assert all(v is None for v in c["probe_cosine"][0]) and all(v is not None for v in c["probe_cosine"][1])
    assert c["sg_loss"][0] == [None] * 4 and straight["model"]["dni_boundaries"] == 1
    with pytest.raises(RunInterrupted):
        train_ff(cfg, tmp_path / "resumed", _stop_after=10)
    assert results(train_ff(cfg, tmp_path / "resumed")) == results(straight)


def test_probe_is_off_by_default_and_leaves_the_run_unchanged(data_root, tmp_path):
    plain = train_ff(tiny(data_root), tmp_path / "plain")
    probed = train_ff(tiny(data_root, probe_every=10), tmp_path / "probed")
    assert "probe_step" not in plain["curves"]
    assert probed["curves"]["test_error"] == plain["curves"]["test_error"]
    assert probed["curves"]["train_loss"] == plain["curves"]["train_loss"]


@pytest.mark.parametrize("method, explicit", [("dni", dict(sg_hidden_layers=2)), ("cdni", dict(sg_hidden_layers=0)),
                                              ("dni", dict(warmup=0.0, dni_placement="every", sg_loss_weight=1.0))])
def test_run_names_are_canonical(method, explicit):
    """The paper's defaults given explicitly name the same run as when left out; other values are named."""
    from dataclasses import asdict

    from sgbench.families.diagnostics.config import run_name

    def name(**kw):
        return run_name(asdict(FFConfig(arch="fcn", layers=6, method=method, **kw).resolved()))

    assert name(**explicit) == name() == f"mnist-fcn6-{method}-seed0"
    assert name(sg_hidden_layers=1, warmup=0.3, dni_placement="middle", sg_loss_weight=10.0) == \
        f"mnist-fcn6-{method}-middle-w0.3-sgh1-sgw10-seed0"


@pytest.mark.parametrize("bad, message", [
    (dict(dni_placement="sometimes"), "unknown dni_placement 'sometimes'"),
    (dict(method="backprop", dni_placement="middle"), "needs method dni or cdni"),
    (dict(warmup=1.5), "warmup is a fraction"),
    (dict(method="unlock", warmup=0.1), "use warmup 0"),
    (dict(method="backprop", probe_every=10), "use probe_every 0"),
    (dict(probe_size=1), "probe_size must be >= 2"),
])
def test_bad_diagnostics_config_is_refused(data_root, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny(data_root, **bad).resolved()
    with pytest.raises(ValueError, match="unknown config key"):
        FFConfig.from_dict({"placement": "middle"})


# ---------------------------------------------------------------- RNN probe

def test_rnn_probe_with_an_oracle_sg_reports_cosine_one():
    cfg = RNNConfig(hidden_size=8, batch_size=4, T=3)
    task = Task("copy")
    torch.manual_seed(0)
    model = SequenceNet(task.in_dim, task.out_dim, cfg)

    class Oracle(nn.Module):  # the exact per-example gradient of the probe's own horizon, computed here
        def forward(self, h, context=None):
            return truth / cfg.sg_scale

    # the probe's reference, with an SG of zeros first: its norm ratio is 0
    zero = rnn_fidelity(model, task, 1, cfg.T, 2, cfg.batch_size, seed=5, device="cpu")
    assert zero["norm_ratio"] == 0.0 and zero["rel_error"] == pytest.approx(1.0)
    from sgbench.families.rnn.run import window_errors
    from sgbench.fidelity import PROBE_SEED_OFFSET
    from sgbench.tasks import EpisodeStream
    stream = EpisodeStream(task, cfg.batch_size, PROBE_SEED_OFFSET + 5)
    x0, _, _ = stream.window(cfg.T, 1)
    x, y, mask = stream.window(2 * cfg.T, 1)
    with torch.no_grad():
        _, _, state = model(x0, model.initial_state(cfg.batch_size, "cpu"))
    state.requires_grad_()
    logits, _, _ = model(x, state)
    (truth,) = torch.autograd.grad(window_errors(logits, y, mask).sum(), state)  # batch-summed = per example
    model.boundary.sg_model = Oracle()
    got = rnn_fidelity(model, task, 1, cfg.T, 2, cfg.batch_size, seed=5, device="cpu")
    assert got["cosine"] == pytest.approx(1.0, abs=1e-6) and got["rel_error"] == pytest.approx(0.0, abs=1e-5)


# ---------------------------------------------------------------- tables, figures, report

def test_aggregate_figures_and_report_of_the_diagnostics_family(data_root, tmp_path):
    from sgbench.claims.render import write_report
    settings = dict(probe_every=20, probe_size=64, sg_hidden_layers=None)  # None: the paper's SG, the default
    configs = {"bp": tiny(data_root, method="backprop"), "every": tiny(data_root, **settings),
               "middle": tiny(data_root, dni_placement="middle", **settings),
               "warm": tiny(data_root, warmup=0.5, **settings), "sg0": tiny(data_root, **(settings | {"sg_hidden_layers": 0}))}
    paths = []
    for seed in (0, 1):
        for name, cfg in configs.items():
            train_ff(FFConfig(**(vars(cfg) | {"seed": seed})), tmp_path / "runs" / f"{name}{seed}")
            paths.append(tmp_path / "runs" / f"{name}{seed}" / "metrics.json")
    tables = tmp_path / "tables"
    runs = aggregate("diagnostics", paths, "smoke", tables)
    assert len(runs) == 10 and set(runs["dni_boundaries"]) == {0, 1, 3}
    fidelity = report.read_table(tables / "diagnostics_fidelity.csv")
    assert set(fidelity["distance"]) == {1, 2, 3} and fidelity["cosine"].between(-1, 1).all()
    md = (tables / "diagnostics.md").read_text()
    for text in ("Placement", "d = 3", "w = 50 %", "steps/s", "(n=2)", "backprop (0 DNIs)", "dni, middle (1 DNIs)"):
        assert text in md, text
    with pytest.raises(report.MetricsError, match="the same run twice"):
        aggregate("diagnostics", paths + paths[:1], "smoke", tmp_path / "again")

    pngs = draw("diagnostics", "smoke", tables, tmp_path / "figures")
    assert all(p.stat().st_size > 10_000 for p in pngs), "every figure drawn, none 'not run'"
    for family in ("feedforward", "rnn"):  # the report needs every family's runs table
        aggregate(family, [], "smoke", tables)
    text = write_report("smoke", tables, tmp_path / "figures", tmp_path / "REPORT.md")
    for claim in ("D1 fidelity vs depth", "D2 placement", "D3 warm-up", "D4 SG model cost"):
        line = next(line for line in text.splitlines() if claim in line)
        assert report.NOT_RUN not in line and "(n=2)" in line, line
    assert "| diagnostics | 10 | 0, 1 |" in text


def test_diagnostics_not_run_says_so(tmp_path):
    from sgbench.claims.render import write_report
    for family in ("feedforward", "rnn", "diagnostics"):
        aggregate(family, [], "quick", tmp_path)
    assert report.NOT_RUN in (tmp_path / "diagnostics.md").read_text()
    draw("diagnostics", "quick", tmp_path, tmp_path / "figures")
    text = write_report("quick", tmp_path, tmp_path / "figures", tmp_path / "REPORT.md")
    section = text.split("## Diagnostics")[1].split("## Tables")[0]
    assert report.NOT_RUN in section and "| diagnostics | 0 |" in text
