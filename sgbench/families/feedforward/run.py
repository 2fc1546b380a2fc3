"""Feed-forward replication runs ([DNI] Sec. 3.3, Table 1): backprop vs DNI vs cDNI vs no-bprop,
and complete unlock (unlock / cunlock: predicted inputs and synthetic gradients, Sec. 3.4).

One run = one (dataset, arch, depth, method, seed). It writes DIR/metrics.json (atomically,
schema-checked) and, while running, DIR/checkpoint.pt so that a killed run resumes bit-identically
(metrics.json then says meta.resumed, and its wall time counts every attempt). At the first step
whose loss (or an SG / input-model loss) is not finite the run stops and writes metrics.json with
status "diverged": the step, the last finite values and the curves up to there (docs/recovery.md).

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
backprop; see sgbench.nets.placed_boundaries). `warmup` = w: the first round(w * iterations) steps are
exact backprop, every placed DNI passing the true gradient through while its SG model trains on
it; then the SGs take over. With w = 1 the network's updates are the backprop run's, with w = 0
the DNI run's. `probe_every` = n > 0: every n steps (and at the last) the SG fidelity probe
(sgbench.fidelity) runs on a fixed probe batch, the first `probe_size` training examples; its time
is excluded from the training time, like evaluation.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import torch

from ... import fast, loop, runtime
from ...data import as_input, load_dataset, resolve_data_root, split
from ...fidelity import ff_fidelity
from ...nets import FeedForwardNet, SGSpec
from ...loop import RunInterrupted  # noqa: F401  (the runner's test hook; tests import it from here)
from ...unlock import InputSpec
from .config import NON_RESULT_FIELDS, FFConfig, FFNetConfig

log = logging.getLogger(__name__)
PROBE_KEYS = ("cosine", "rel_error", "norm_ratio")  # per boundary, see sgbench.probe
# The update-mask generator's seed is the run seed plus this, so it never coincides with a batch stream's.
UPDATE_SEED_OFFSET = 2**32


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


def train_step(model, opt, x, y, update: list[bool] | None = None, precision: str = "fp32") -> torch.Tensor:
    """One update of every layer (or of those with update[k] true) and its SG / input models; returns
    the real chain's loss. For DNI the forward pass already gave each block below a boundary its
    synthetic gradient; the backward brings the head's true gradient and the SG targets. The forward
    runs at the run's `precision` (runtime.autocast), the backward and the update in fp32."""
    opt.zero_grad(set_to_none=True)
    with runtime.autocast(precision, x.device):
        loss, objective = model.training_losses(x, y)
    objective.backward()
    if update is not None and not all(update):
        for params, on in zip(model.layer_parameters(), update):
            if not on:  # this layer sits the step out: Adam skips parameters without a gradient
                for p in params:
                    p.grad = None
    opt.step()
    return loss


def split_run_data(cfg: FFNetConfig, device):
    """(data set, sgbench.data.Split): training images on `device` (all of MNIST/CIFAR fits in memory),
    without the validation hold-out; stratified subsets for train_limit / test_limit."""
    data = load_dataset(cfg.dataset, resolve_data_root(cfg.data_root), download=cfg.download)
    s = split(data, cfg.train_limit, cfg.test_limit, cfg.val_size)
    check_batch_size(cfg, data, len(s.train_y), len(s.val_y))
    return data, dataclasses.replace(s, train_x=s.train_x.to(device), train_y=s.train_y.to(device))


def check_batch_size(cfg: FFNetConfig, data, n_train: int, n_val: int) -> None:
    """A batch larger than the training set would train on the whole set each step while metrics.json
    recorded the batch asked for: refused, naming the size (known only once the data is read)."""
    if cfg.batch_size > n_train:
        held = f" left after the {n_val:,}-image validation hold-out" if n_val else ""
        limit = f" (--train-limit {cfg.train_limit})" if cfg.train_limit else ""
        raise ValueError(f"batch_size {cfg.batch_size:,} is larger than the training set: {n_train:,} {data.name} "
                         f"images{held}{limit}; use --batch-size {n_train} or less")


def load_run_data(cfg: FFNetConfig, device):
    """(data set, (train x, y) on `device`, (test x, y)): split_run_data without the validation set."""
    data, s = split_run_data(cfg, device)
    return data, (s.train_x, s.train_y), (s.test_x, s.test_y)


def build_net(cfg: FFConfig, data) -> FeedForwardNet:
    """The run's network, SG and input models (initialised from torch's global generator)."""
    sg = SGSpec(cfg.sg_hidden_layers, cfg.sg_hidden_dim, cfg.sg_loss_weight, cfg.sg_scale)
    inputs = InputSpec(cfg.input_hidden_layers, cfg.input_hidden_dim)
    return FeedForwardNet(cfg.arch, cfg.layers, cfg.method, data.input_shape, data.num_classes, sg, inputs,
                          cfg.dni_placement)


def lr_schedule(opt, cfg: FFNetConfig):
    """Adam's learning rate divided by lr_gamma at each milestone (fractions of the iterations)."""
    milestones = sorted({max(1, int(m * cfg.iterations)) for m in cfg.lr_milestones})
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=cfg.lr_gamma)


def train_ff(config: FFConfig, out_dir, *, _stop_after: int | None = None) -> dict:
    """Train one feed-forward run; returns the metrics dict also written to out_dir/metrics.json.

    `_stop_after` (tests only) stops after that step's checkpoint, as a kill would.
    """
    if config.seeds:
        raise ValueError("seeds: several seeds in one job train through sgbench.families.feedforward.seeds.train")
    t_start = time.perf_counter()
    cfg = config.resolved()
    out_dir, device, meta = runtime.start_run(cfg, out_dir)

    data, s = split_run_data(cfg, device)
    model = build_net(cfg, data).to(device)
    step_mode = fast.resolve_step(cfg.step, cfg, device)  # eager unless asked (sgbench.fast)
    opt = fast.make_optimizer(model.trainable_parameters(), cfg.lr, step_mode, device, cfg.adam)
    sched = lr_schedule(opt, cfg)
    stream = BatchStream(len(s.train_y), cfg.batch_size, cfg.seed)
    schedule = UpdateSchedule(cfg.layers + 1, cfg.update_prob, cfg.update_periods, cfg.seed)
    run = loop.new_run("step", new_curves(cfg, model))
    stateful = {"model": model, "opt": opt, "sched": sched, "stream": stream, "schedule": schedule}
    ckpt = loop.Checkpoint(out_dir / "checkpoint.pt", {"config": loop.result_config(cfg, NON_RESULT_FIELDS)},
                           stateful, device, "step", t_start, as_recorded=cfg.as_recorded)
    ckpt.resume(run)
    # after the resume: a fused step copies the stream's restored order to the device
    hooks = SingleRun(cfg, model, s, device, fast.Stepper(step_mode, model, opt, stream, s.train_x, s.train_y,
                                                          schedule, train_step, cfg.precision), sched)
    log.info("train-ff %s/%s-%d/%s seed %d on %s (%s), %d iterations, %d SG boundaries, %d input models",
             data.name, cfg.arch, cfg.layers, cfg.method, cfg.seed, device, data.source, cfg.iterations,
             hooks.n_boundaries, hooks.n_inputs)
    model.train()
    loop.train(hooks, run, ckpt, cfg.iterations, stop_after=_stop_after, precision=cfg.precision)

    curves, diverged = run["curves"], run["diverged"]
    final_error = test_error(model, s.test_x, s.test_y, device) if diverged else curves["test_error"][-1]
    final_val = (test_error(model, s.val_x, s.val_y, device) if len(s.val_y) else None) if diverged \
        else curves["val_error"][-1]
    final = _final(curves, final_error, final_val, diverged) | \
        {"update_fraction": update_fractions(schedule, model, run["step"])}
    metrics = ff_metrics(cfg, out_dir, data, s, model, curves, final, run, step_mode,
                         meta | {"resumed": run["resumed"]}, ckpt.wall(run))
    ckpt.remove()
    log.info("%s: test error %.2f%%, %.1f steps/s -> %s", metrics["status"], metrics["final"]["test_error"],
             metrics["timing"]["steps_per_s"] or 0, out_dir / "metrics.json")
    return metrics


def new_curves(cfg: FFConfig, model) -> dict:
    n_boundaries, n_inputs = len(model.boundaries or []), len(model.input_models or [])
    curves = {"step": [], "train_loss": [], "test_error": [], "val_error": [], "lr": [], "elapsed_s": [],
              "sg_loss": [[] for _ in range(n_boundaries)], "input_loss": [[] for _ in range(n_inputs)]}
    if cfg.probe_every:
        curves |= {"probe_step": [], **{f"probe_{k}": [[] for _ in range(n_boundaries)] for k in PROBE_KEYS}}
    return curves


class SingleRun(loop.Hooks):
    """The feed-forward step and evaluation of one run: losses summed on the device between evaluations,
    the divergence watch, warm-up, the fidelity probe, test and validation error."""

    def __init__(self, cfg: FFConfig, model, s, device, stepper, sched):
        self.cfg, self.model, self.s, self.device, self.stepper, self.sched = cfg, model, s, device, stepper, sched
        self.n_boundaries = 0 if model.boundaries is None else len(model.boundaries)
        self.n_inputs = 0 if model.input_models is None else len(model.input_models)
        self.warmup_steps = round(cfg.warmup * cfg.iterations)
        self.watch = runtime.NonFiniteWatch(device)
        self.loss_sum = torch.zeros((), device=device)
        self.sg_sum = torch.zeros(self.n_boundaries, device=device)
        self.input_sum = torch.zeros(self.n_inputs, device=device)
        self.since = 0
        if cfg.probe_every:
            self.probe_x, self.probe_y = as_input(s.train_x[:cfg.probe_size]), s.train_y[:cfg.probe_size]

    def eval_due(self, step: int) -> bool:
        return step % self.cfg.eval_every == 0

    def _probe_due(self, step: int) -> bool:
        return bool(self.cfg.probe_every) and (step % self.cfg.probe_every == 0 or step == self.cfg.iterations)

    def step(self, run: dict) -> dict | None:
        cfg, model = self.cfg, self.model
        if cfg.warmup:
            model.set_exact(run["step"] < self.warmup_steps)
        loss = self.stepper(run["step"] + 1)
        self.sched.step()
        run["step"] += 1
        step, self.since = run["step"], self.since + 1
        self.loss_sum += loss.detach()
        for i, b in enumerate(model.boundaries or []):
            if b.last_sg_loss is not None:
                self.sg_sum[i] += b.last_sg_loss
        for i, input_loss in enumerate(model.last_input_losses):
            self.input_sum[i] += input_loss
        self.watch.observe(step, _step_losses(loss, model))
        look = self.watch.due(step) or self.eval_due(step) or step == cfg.iterations
        if look or self._probe_due(step):
            fast.sync(self.device)  # before the host reads the device: the steps still queued on a GPU are training time
        if look and self.watch.diverged_at():
            return _divergence(self.watch, run["curves"])
        return None

    def after_step(self, run: dict) -> None:
        if self._probe_due(run["step"]):
            curves = run["curves"]
            curves["probe_step"].append(run["step"])
            for i, row in enumerate(ff_fidelity(self.model, self.probe_x, self.probe_y)):
                for k in PROBE_KEYS:
                    curves[f"probe_{k}"][i].append(None if row is None else row[k])

    def evaluate(self, run: dict) -> None:
        curves, s, device, since = run["curves"], self.s, self.device, self.since
        curves["step"].append(run["step"])
        curves["train_loss"].append(float(self.loss_sum) / since)
        curves["test_error"].append(test_error(self.model, s.test_x, s.test_y, device))
        curves["val_error"].append(test_error(self.model, s.val_x, s.val_y, device) if len(s.val_y) else None)
        curves["lr"].append(float(self.sched.get_last_lr()[0]))  # a tensor when captured
        curves["elapsed_s"].append(round(run["train_time"], 3))
        for i in range(self.n_boundaries):  # None where no DNI sits (dni_placement)
            curves["sg_loss"][i].append(float(self.sg_sum[i]) / since if self.model.placed[i] else None)
        for i in range(self.n_inputs):
            curves["input_loss"][i].append(float(self.input_sum[i]) / since)
        self.loss_sum.zero_(), self.sg_sum.zero_(), self.input_sum.zero_()
        self.since = 0
        return None

    def detail(self, curves: dict) -> str:
        return f"loss {curves['train_loss'][-1]:.4f} test error {curves['test_error'][-1]:.2f}%" if curves["step"] else ""


def ff_metrics(cfg: FFConfig, out_dir, data, s, net, curves: dict, final: dict, run: dict, step_mode: str,
               meta: dict, wall: float) -> dict:
    """metrics.json of a feed-forward run (one seed; a seed group writes one per seed)."""
    body = {
        "dataset": {"requested": cfg.dataset, "variant": data.name, "source": data.source,
                    "n_train": len(s.train_y), "n_val": len(s.val_y), "n_test": len(s.test_y)},
        "model": {"parameters": sum(p.numel() for p in net.model_parameters()),
                  "sg_parameters": sum(p.numel() for p in net.sg_parameters()),
                  "input_parameters": sum(p.numel() for p in net.input_parameters()),
                  "boundaries": len(net.boundaries or []), "dni_boundaries": sum(net.placed)},
        "curves": curves,
        "final": final,
        "timing": {"steps_per_s": loop.rate(run["step"], run["train_time"]), "step": step_mode},
    }
    return loop.write_metrics(out_dir, "ff_metrics", "feedforward", cfg, body, diverged=run["diverged"], meta=meta,
                              wall=wall, train_time=run["train_time"])


def update_fractions(schedule: UpdateSchedule, model, steps: int) -> list[float]:
    """Per layer (head last): the fraction of the steps run on which it updated (0 for a frozen layer)."""
    trains = [any(p.requires_grad for p in params) for params in model.layer_parameters()]
    return [n / steps if t and steps else 0.0 for n, t in zip(schedule.counts, trains)]


def _step_losses(loss, model) -> torch.Tensor:
    """Every loss a step trained on, summed: non-finite when any of them is (the divergence test)."""
    total = loss.detach()
    for b in model.boundaries or []:
        if b.last_sg_loss is not None:
            total = total + b.last_sg_loss
    for input_loss in model.last_input_losses:
        total = total + input_loss
    return total


def _divergence(watch, curves: dict) -> dict:
    """The "diverged" entry: first non-finite step, the last finite step loss and last logged point."""
    last = {"loss": watch.last_finite_value()}
    if curves["step"]:
        last |= {"logged_step": curves["step"][-1], "train_loss": curves["train_loss"][-1],
                 "test_error": curves["test_error"][-1]}
    return runtime.diverged_record(watch.diverged_at(), last)


def _final(curves: dict, test_error_now: float, val_error_now: float | None, diverged: dict | None) -> dict:
    """Final values: a completed run's last logged point; a diverged run's test and validation errors are
    those of the net where it stopped (measured), its losses are not finite (null)."""
    if diverged:
        return {"test_error": test_error_now, "val_error": val_error_now, "train_loss": None,
                "sg_loss": [None for _ in curves["sg_loss"]], "input_loss": [None for _ in curves["input_loss"]]}
    return {"test_error": curves["test_error"][-1], "val_error": val_error_now, "train_loss": curves["train_loss"][-1],
            "sg_loss": [c[-1] for c in curves["sg_loss"]], "input_loss": [c[-1] for c in curves["input_loss"]]}
