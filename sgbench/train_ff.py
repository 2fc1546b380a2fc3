"""Feed-forward replication runs ([DNI] Sec. 3.3, Table 1): backprop vs DNI vs cDNI vs no-bprop,
and complete unlock (unlock / cunlock: predicted inputs and synthetic gradients, Sec. 3.4).

One run = one (dataset, arch, depth, method, seed). It writes DIR/metrics.json (atomically,
schema-checked) and, while running, DIR/checkpoint.pt so that a killed run resumes.

Asynchronous updates (any method): a layer is the unit of update, together with the SG model on
its output and the input model predicting its input. At step t (1-based) layer k updates when its
clock ticks (t % update_periods[k] == 0) and, independently of the other layers, a coin with
probability update_prob comes up. A layer that does not update keeps its parameters: its
gradients are computed as usual (in backprop they still flow through it to the layers below) and
then dropped, and Adam skips parameters without a gradient. BN running statistics, which are not
learnt but track the real activations that evaluation will see, keep being updated. The coins come
from their own generator (seeded from the run seed, saved in the checkpoint); with update_prob = 1
none is drawn, so the run is the ordinary one bit for bit.

Diagnostics (dni / cdni): `dni_placement` puts DNIs at only some boundaries (the others are exact
backprop; see models.placed_boundaries). `warmup` = w: the first round(w * iterations) steps are
exact backprop, every placed DNI passing the true gradient through while its SG model trains on
it; then the SGs take over. With w = 1 the network's updates are the backprop run's, with w = 0
the DNI run's. `probe_every` = n > 0: every n steps (and at the last) the SG fidelity probe
(sgbench.probe) runs on a fixed probe batch, the first `probe_size` training examples; its time
is excluded from the training time, like evaluation.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import runio
from .data import DATASETS, as_input, load_dataset, resolve_data_root
from .models import (ARCHS, METHODS, PLACEMENTS, SG_METHODS, UNLOCK_METHODS, FeedForwardNet, InputSpec, SGSpec,
                     default_input_hidden, paper_sg_hidden_layers)
from .probe import ff_fidelity

log = logging.getLogger(__name__)
# Fields that do not change the numbers a run computes (a checkpoint made with other values resumes).
NON_RESULT_FIELDS = {"device", "data_root", "download", "threads"}
PROBE_KEYS = ("cosine", "rel_error", "norm_ratio")  # per boundary, see sgbench.probe
# The update-mask generator's seed is the run seed plus this, so it never coincides with a batch stream's.
UPDATE_SEED_OFFSET = 2**32


class RunInterrupted(RuntimeError):
    """Raised by the `_stop_after` test hook, standing in for a killed process."""


@dataclass
class FFConfig(runio.RunConfig):
    """Every setting of a feed-forward run. Defaults are the paper's ([DNI] supplement)."""
    dataset: str = "mnist"              # mnist | cifar10 | cifar10-jpeg
    arch: str = "fcn"                   # fcn | cnn
    layers: int = 3                     # hidden layers
    method: str = "dni"                 # backprop | dni | cdni | no_bprop | unlock | cunlock
    seed: int = 0
    iterations: int = 500_000
    batch_size: int = 256
    lr: float = 3e-5                    # Adam
    lr_milestones: list[float] = field(default_factory=lambda: [0.6, 0.8])  # fractions of iterations
    lr_gamma: float = 0.1
    sg_hidden_layers: int | None = None  # None: paper's choice (FCN: DNI 2, cDNI 0; CNN: 2)
    sg_hidden_dim: int | None = None     # None: 1024 units (FCN) / 128 channels (CNN)
    sg_loss_weight: float = 1.0
    sg_scale: float = 1.0
    input_hidden_layers: int | None = None  # unlock input models; None: 1 (FCN and CNN)
    input_hidden_dim: int | None = None     # None: 1024 units (FCN) / 128 channels (CNN)
    update_prob: float = 1.0            # each step each layer updates with this probability (1: always)
    update_periods: list[int] | None = None  # layer k updates every n_k steps; one per layer, head last
    dni_placement: str = "every"        # dni/cdni: every | every_second | middle boundary (others exact)
    warmup: float = 0.0                 # dni/cdni: fraction of iterations of exact backprop first (SGs learn)
    probe_every: int = 0                # SG fidelity probe every n steps (0: off)
    probe_size: int = 256               # probe batch: the first N training examples
    eval_every: int = 0                 # 0: 20 evaluations over the run
    train_limit: int = 0                # use only the first N training examples (0: all)
    test_limit: int = 0                 # evaluate on the first N test examples (0: all)
    tier: str = "custom"                # label only: smoke | quick | paper | custom
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    data_root: str | None = None        # else $SGBENCH_DATA, else ./data
    download: bool = False              # let torchvision download when the data is missing
    threads: int = 0                    # torch CPU threads (0: torch's default)

    CHOICES = {"dataset": DATASETS, "arch": ARCHS, "method": METHODS, "dni_placement": PLACEMENTS,
               "tier": runio.TIERS}

    def resolved(self) -> "FFConfig":
        """Check every value and fill in the derived defaults; raises ValueError naming the fix."""
        c = dataclasses.replace(self)
        c.check([
            (c.layers >= 1, f"layers must be >= 1, got {c.layers}"),
            (c.iterations >= 1, f"iterations must be >= 1, got {c.iterations}"),
            (c.batch_size >= 2, f"batch_size must be >= 2 (batch norm needs it), got {c.batch_size}"),
            (c.lr > 0, f"lr must be > 0, got {c.lr}"),
            (all(0 < m < 1 for m in c.lr_milestones), f"lr_milestones are fractions in (0, 1), got {c.lr_milestones}"),
            (c.sg_hidden_layers is None or c.sg_hidden_layers >= 0, "sg_hidden_layers must be >= 0"),
            (c.input_hidden_layers is None or c.input_hidden_layers >= 0, "input_hidden_layers must be >= 0"),
            (all(d is None or d >= 1 for d in (c.sg_hidden_dim, c.input_hidden_dim)),
             "sg_hidden_dim and input_hidden_dim must be >= 1"),
            (0 < c.update_prob <= 1, f"update_prob must be in (0, 1] (1: every layer updates every step), got {c.update_prob}"),
            (c.update_periods is None or len(c.update_periods) == c.layers + 1,
             f"update_periods needs one period per layer, the output layer last: {c.layers + 1} values "
             f"for layers={c.layers}, got {c.update_periods}"),
            (c.update_periods is None or all(n >= 1 for n in c.update_periods),
             f"update_periods are steps between a layer's updates, each >= 1, got {c.update_periods}"),
            (c.eval_every >= 0 and c.train_limit >= 0 and c.test_limit >= 0, "eval_every, train_limit, test_limit must be >= 0"),
            (c.dni_placement == "every" or c.method in ("dni", "cdni"),
             f"dni_placement {c.dni_placement!r} needs method dni or cdni (got {c.method!r}); use dni_placement every"),
            (0 <= c.warmup <= 1, f"warmup is a fraction of the iterations in [0, 1], got {c.warmup}"),
            (c.warmup == 0 or c.method in ("dni", "cdni"),
             f"warmup needs method dni or cdni (got {c.method!r}); use warmup 0"),
            (c.probe_every >= 0, f"probe_every must be >= 0 (0: no probe), got {c.probe_every}"),
            (c.probe_every == 0 or c.method in ("dni", "cdni"),
             f"the SG probe needs method dni or cdni (got {c.method!r}); use probe_every 0"),
            (c.probe_size >= 2, f"probe_size must be >= 2 (batch norm needs it), got {c.probe_size}"),
        ])
        if c.sg_hidden_layers is None and c.method in SG_METHODS:
            c.sg_hidden_layers = paper_sg_hidden_layers(c.arch, c.method)
        if c.sg_hidden_dim is None and c.method in SG_METHODS:
            c.sg_hidden_dim = 1024 if c.arch == "fcn" else 128
        if c.method in UNLOCK_METHODS:
            default_layers, default_dim = default_input_hidden(c.arch)
            c.input_hidden_layers = default_layers if c.input_hidden_layers is None else c.input_hidden_layers
            c.input_hidden_dim = c.input_hidden_dim or default_dim
        if c.eval_every == 0:
            c.eval_every = max(1, math.ceil(c.iterations / 20))
        c.lr_milestones = [float(m) for m in c.lr_milestones]
        return c


class BatchStream:
    """Shuffled mini-batches, a fresh permutation each epoch; its state can be saved and restored."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, min(batch_size, n)
        self.generator = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(n, generator=self.generator), 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self):
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, s):
        self.generator.set_state(s["generator"])
        self.perm, self.pos = s["perm"], s["pos"]


class UpdateSchedule:
    """Which layers update at each step (see the module docstring), and how often each has."""

    def __init__(self, n_layers: int, prob: float = 1.0, periods: list[int] | None = None, seed: int = 0):
        self.prob, self.periods = prob, list(periods or [1] * n_layers)
        self.generator = torch.Generator().manual_seed(UPDATE_SEED_OFFSET + seed)
        self.counts = [0] * n_layers

    def mask(self, step: int) -> list[bool]:
        """Layers that update at `step` (1-based); counts them."""
        update = [step % n == 0 for n in self.periods]
        if self.prob < 1:  # with p = 1 nothing is drawn
            coins = (torch.rand(len(update), generator=self.generator) < self.prob).tolist()
            update = [u and c for u, c in zip(update, coins)]
        self.counts = [n + u for n, u in zip(self.counts, update)]
        return update

    def state_dict(self):
        return {"generator": self.generator.get_state(), "counts": list(self.counts)}

    def load_state_dict(self, s):
        self.generator.set_state(s["generator"])
        self.counts = list(s["counts"])


@torch.no_grad()
def test_error(model, x_u8, y, device, batch_size: int = 1000) -> float:
    """Test error (%) with the real forward chain: eval mode makes every DNI the identity."""
    model.eval()
    wrong = 0
    for i in range(0, len(y), batch_size):
        xb = as_input(x_u8[i:i + batch_size].to(device))
        wrong += (model(xb).argmax(1) != y[i:i + batch_size].to(device)).sum().item()
    model.train()
    return 100.0 * wrong / len(y)


def train_step(model, opt, x, y, update: list[bool] | None = None) -> torch.Tensor:
    """One update of every layer (or of those with update[k] true) and its SG / input models; returns
    the real chain's loss. For DNI the forward pass already gave each block below a boundary its
    synthetic gradient; the backward brings the head's true gradient and the SG targets."""
    opt.zero_grad(set_to_none=True)
    loss, objective = model.training_losses(x, y)
    objective.backward()
    if update is not None and not all(update):
        for params, on in zip(model.layer_parameters(), update):
            if not on:  # this layer sits the step out: Adam skips parameters without a gradient
                for p in params:
                    p.grad = None
    opt.step()
    return loss


def load_run_data(cfg: FFConfig, device):
    """(data set, (train x, y) on `device`, (test x, y)), cut to train_limit / test_limit."""
    data = load_dataset(cfg.dataset, resolve_data_root(cfg.data_root), download=cfg.download)
    train_x, train_y = data.train_x, data.train_y
    if cfg.train_limit:
        train_x, train_y = train_x[:cfg.train_limit], train_y[:cfg.train_limit]
    test_x, test_y = (data.test_x[:cfg.test_limit], data.test_y[:cfg.test_limit]) if cfg.test_limit else (data.test_x, data.test_y)
    return data, (train_x.to(device), train_y.to(device)), (test_x, test_y)  # all of MNIST/CIFAR fits in memory


def build_net(cfg: FFConfig, data) -> FeedForwardNet:
    """The run's network, SG and input models (initialised from torch's global generator)."""
    sg = SGSpec(cfg.sg_hidden_layers, cfg.sg_hidden_dim, cfg.sg_loss_weight, cfg.sg_scale)
    inputs = InputSpec(cfg.input_hidden_layers, cfg.input_hidden_dim)
    return FeedForwardNet(cfg.arch, cfg.layers, cfg.method, data.input_shape, data.num_classes, sg, inputs,
                          cfg.dni_placement)


def lr_schedule(opt, cfg: FFConfig):
    """Adam's learning rate divided by lr_gamma at each milestone (fractions of the iterations)."""
    milestones = sorted({max(1, int(m * cfg.iterations)) for m in cfg.lr_milestones})
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=cfg.lr_gamma)


def _result_config(cfg: FFConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NON_RESULT_FIELDS}


def _resume(ckpt_path: Path, cfg: FFConfig, device, stateful: dict) -> dict | None:
    """Load model/optimizer/schedule/batch-stream state from a checkpoint of the same config, if any."""
    if not ckpt_path.exists():
        return None
    try:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
    except Exception as e:  # e.g. written by an incompatible sgbench version
        log.warning("cannot read %s (%s): starting afresh", ckpt_path, e)
        return None
    if ckpt["config"] != _result_config(cfg):
        log.warning("%s was made with another config: starting afresh", ckpt_path)
        return None
    for name, obj in stateful.items():
        obj.load_state_dict(ckpt[name])
    log.info("resuming from %s at step %d", ckpt_path, ckpt["step"])
    return ckpt


def train_ff(config: FFConfig, out_dir, *, _stop_after: int | None = None) -> dict:
    """Train one feed-forward run; returns the metrics dict also written to out_dir/metrics.json.

    `_stop_after` (tests only) stops after that step's checkpoint, as a kill would.
    """
    t_start = time.perf_counter()
    cfg = config.resolved()
    out_dir, device, meta = runio.start_run(cfg, out_dir)

    data, (train_x, train_y), (test_x, test_y) = load_run_data(cfg, device)
    model = build_net(cfg, data).to(device)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr)
    sched = lr_schedule(opt, cfg)
    stream = BatchStream(len(train_y), cfg.batch_size, cfg.seed)
    schedule = UpdateSchedule(cfg.layers + 1, cfg.update_prob, cfg.update_periods, cfg.seed)
    n_boundaries = 0 if model.boundaries is None else len(model.boundaries)
    n_inputs = 0 if model.input_models is None else len(model.input_models)
    curves = {"step": [], "train_loss": [], "test_error": [], "lr": [], "elapsed_s": [],
              "sg_loss": [[] for _ in range(n_boundaries)], "input_loss": [[] for _ in range(n_inputs)]}
    if cfg.probe_every:
        curves |= {"probe_step": [], **{f"probe_{k}": [[] for _ in range(n_boundaries)] for k in PROBE_KEYS}}
        probe_x, probe_y = as_input(train_x[:cfg.probe_size]), train_y[:cfg.probe_size]
    warmup_steps = round(cfg.warmup * cfg.iterations)
    step, train_time = 0, 0.0
    ckpt_path = out_dir / "checkpoint.pt"
    stateful = {"model": model, "opt": opt, "sched": sched, "stream": stream, "schedule": schedule}
    resumed = _resume(ckpt_path, cfg, device, stateful)
    if resumed:
        curves, step, train_time = resumed["curves"], resumed["step"], resumed["train_time"]

    log.info("train-ff %s/%s-%d/%s seed %d on %s (%s), %d iterations, %d SG boundaries, %d input models",
             data.name, cfg.arch, cfg.layers, cfg.method, cfg.seed, device, data.source, cfg.iterations, n_boundaries,
             n_inputs)
    loss_sum = torch.zeros((), device=device)
    sg_sum = torch.zeros(n_boundaries, device=device)
    input_sum = torch.zeros(n_inputs, device=device)
    since, last_log = 0, time.perf_counter()
    model.train()
    while step < cfg.iterations:
        t0 = time.perf_counter()
        idx = stream.next().to(device)
        x, y = as_input(train_x[idx]), train_y[idx]
        if cfg.warmup:
            model.set_exact(step < warmup_steps)
        loss = train_step(model, opt, x, y, schedule.mask(step + 1))
        sched.step()
        step, since = step + 1, since + 1
        loss_sum += loss.detach()
        for i, b in enumerate(model.boundaries or []):
            if b.last_sg_loss is not None:
                sg_sum[i] += b.last_sg_loss
        for i, input_loss in enumerate(model.last_input_losses):
            input_sum[i] += input_loss
        train_time += time.perf_counter() - t0

        if cfg.probe_every and (step % cfg.probe_every == 0 or step == cfg.iterations):
            curves["probe_step"].append(step)
            for i, row in enumerate(ff_fidelity(model, probe_x, probe_y)):
                for k in PROBE_KEYS:
                    curves[f"probe_{k}"][i].append(None if row is None else row[k])
        if step % cfg.eval_every == 0 or step == cfg.iterations:
            err = test_error(model, test_x, test_y, device)
            curves["step"].append(step)
            curves["train_loss"].append(float(loss_sum) / since)
            curves["test_error"].append(err)
            curves["lr"].append(sched.get_last_lr()[0])
            curves["elapsed_s"].append(round(train_time, 3))
            for i in range(n_boundaries):  # None where no DNI sits (dni_placement)
                curves["sg_loss"][i].append(float(sg_sum[i]) / since if model.placed[i] else None)
            for i in range(n_inputs):
                curves["input_loss"][i].append(float(input_sum[i]) / since)
            loss_sum.zero_(), sg_sum.zero_(), input_sum.zero_()
            since = 0
            _log_progress(step, cfg.iterations, train_time, curves)
            runio.atomic_torch_save(ckpt_path, {
                "config": _result_config(cfg), "curves": curves, "step": step, "train_time": train_time,
                **{name: obj.state_dict() for name, obj in stateful.items()}})
            last_log = time.perf_counter()
            if _stop_after is not None and step >= _stop_after:
                raise RunInterrupted(f"stopped after step {step} (test hook)")
        elif time.perf_counter() - last_log > 60:
            _log_progress(step, cfg.iterations, train_time, curves)
            last_log = time.perf_counter()

    metrics = {
        "schema": "sgbench.ff_metrics/1",
        "status": "complete",
        "experiment": "feedforward",
        "tier": cfg.tier,
        "config": dataclasses.asdict(cfg),
        "dataset": {"requested": cfg.dataset, "variant": data.name, "source": data.source,
                    "n_train": len(train_y), "n_test": len(test_y)},
        "model": {"parameters": sum(p.numel() for p in model.model_parameters()),
                  "sg_parameters": sum(p.numel() for p in model.sg_parameters()),
                  "input_parameters": sum(p.numel() for p in model.input_parameters()),
                  "boundaries": n_boundaries, "dni_boundaries": sum(model.placed)},
        "curves": curves,
        "final": {"test_error": curves["test_error"][-1], "train_loss": curves["train_loss"][-1],
                  "sg_loss": [c[-1] for c in curves["sg_loss"]],
                  "input_loss": [c[-1] for c in curves["input_loss"]],
                  "update_fraction": update_fractions(schedule, model, cfg.iterations)},
        "timing": {"wall_time_s": round(time.perf_counter() - t_start, 3), "train_time_s": round(train_time, 3),
                   "steps_per_s": round(cfg.iterations / train_time, 3) if train_time > 0 else None},
        "meta": meta,
    }
    runio.validate(metrics, "ff_metrics")
    runio.atomic_write_json(out_dir / "metrics.json", metrics)
    ckpt_path.unlink(missing_ok=True)
    log.info("done: test error %.2f%%, %.1f steps/s -> %s", metrics["final"]["test_error"],
             metrics["timing"]["steps_per_s"] or 0, out_dir / "metrics.json")
    return metrics


def update_fractions(schedule: UpdateSchedule, model, iterations: int) -> list[float]:
    """Per layer (head last): the fraction of steps on which it updated (0 for a frozen layer)."""
    trains = [any(p.requires_grad for p in params) for params in model.layer_parameters()]
    return [n / iterations if t else 0.0 for n, t in zip(schedule.counts, trains)]


def _log_progress(step: int, total: int, train_time: float, curves: dict) -> None:
    last = f"loss {curves['train_loss'][-1]:.4f} test error {curves['test_error'][-1]:.2f}%" if curves["step"] else ""
    log.info(runio.progress_line(step, total, train_time, last))
