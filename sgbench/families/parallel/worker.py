"""One worker process of a parallel run: its device, its training (the protocol's step on the shared
run loop, sgbench.loop) and the evaluation every worker joins. run.py spawns the workers and
assembles metrics.json; launch.py starts the same workers under torchrun.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.distributed as dist

from ... import loop, optim, runtime
from ..feedforward.run import build_net, load_run_data, lr_schedule
from .config import ParallelConfig
from .protocols import Batches, finish_links, first_divergence, protocol_of
from .stages import sync


def worker_device(cfg: ParallelConfig, local_rank: int, local_workers: int) -> tuple[torch.device, str]:
    """(device, backend) of the worker `local_rank` of the `local_workers` on its machine: NCCL with one
    GPU per worker (GPU local_rank), else gloo (on a shared GPU, staged through CPU)."""
    device = runtime.resolve_device(cfg.device)
    if device.type != "cuda":
        return device, "gloo"
    if torch.cuda.device_count() >= local_workers:
        return torch.device("cuda", local_rank), "nccl"
    return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index), "gloo"


def train_worker(rank: int, cfg: ParallelConfig, device, backend: str, split: list[int], out_dir: str) -> dict:
    torch.manual_seed(cfg.seed)  # every worker builds the whole net from the seed, then keeps its part
    data, (train_x, train_y), (test_x, test_y) = load_run_data(cfg, device)
    net = build_net(cfg.net_config(), data).to(device)
    protocol = protocol_of(cfg)
    w = protocol.build_worker(rank, net, data, device, backend, split)
    opt = optim.Adam([p for p in w.stage.parameters() if p.requires_grad], lr=cfg.lr)
    sched = lr_schedule(opt, cfg)
    batches = Batches(cfg, w, train_x, train_y)
    latency, allreduce = protocol.measure(w, batches.global_batch, device)
    step_fn, late = protocol.stepper(w, opt, device)
    dist.barrier()

    run = loop.new_run("step", {"step": [], "train_loss": [], "test_error": [], "lr": [], "elapsed_s": []})
    loop.train(WorkerRun(cfg, protocol, w, batches, step_fn, sched, device, test_x, test_y), run, NoCheckpoint(),
               cfg.iterations, log_at_eval=False, log_every_s=10, precision=cfg.precision)
    curves, train_s, step, diverged = run["curves"], run["train_time"], run["step"], run["diverged"]
    finish_links(w, late)
    if cfg.save_params:
        runtime.atomic_torch_save(Path(out_dir) / f"params-{rank}.pt", {
            "params": {n: p.detach().cpu() for n, p in w.stage.named_parameters()},
            "grads": {n: p.grad.detach().cpu() for n, p in w.stage.named_parameters() if p.grad is not None}})
    dist.barrier()
    return {"rank": rank, "units": protocol.units(rank, split), "train_s": train_s, "wait_s": w.wait_s(), "steps": step,
            "link_latency_s": latency, "allreduce_s": allreduce,
            "curves": curves if w.keeps_curves else None, "diverged": diverged}


class NoCheckpoint:
    """A timing run is never checkpointed nor resumed (its seconds would mix two attempts)."""
    counter = "step"

    def save(self, run: dict) -> None:
        pass


class WorkerRun(loop.Hooks):
    """One worker's step (its protocol's: a stage, a replica), and the evaluation every worker joins:
    divergence agreed by all (a collective), the protocol's test error, a barrier; curves are kept by
    the worker that sees the whole net's output (w.keeps_curves), and only it prints progress."""

    def __init__(self, cfg, protocol, w, batches, step_fn, sched, device, test_x, test_y):
        self.cfg, self.protocol, self.w, self.batches, self.step_fn = cfg, protocol, w, batches, step_fn
        self.sched, self.device, self.test_x, self.test_y = sched, device, test_x, test_y
        self.loss, self.loss_sum, self.since, self.bad_step = None, 0.0, 0, 0

    def step(self, run: dict) -> None:
        x, y = self.batches.next()
        self.loss = self.step_fn(x, y)
        self.sched.step()
        sync(self.device)  # GPU work is asynchronous: count it in the step that launched it
        run["step"] += 1
        return None

    def after_step(self, run: dict) -> None:
        if self.loss is not None:  # read off the clock
            value = self.loss.item()
            if not math.isfinite(value):
                self.bad_step = self.bad_step or run["step"]
            self.loss_sum, self.since = self.loss_sum + value, self.since + 1

    def eval_due(self, step: int) -> bool:
        return step % self.cfg.eval_every == 0

    def evaluate(self, run: dict) -> dict | None:
        first_bad = first_divergence(self.bad_step, self.device)
        curves = run["curves"]
        if first_bad:
            return runtime.diverged_record(first_bad, {k: curves[k][-1] for k in ("train_loss", "test_error")
                                                       if curves[k]})
        err = self.protocol.evaluate(self.w, self.test_x, self.test_y)
        dist.barrier()  # no worker starts the next step's clock while another still evaluates
        if self.w.keeps_curves:
            curves["step"].append(run["step"])
            curves["train_loss"].append(self.loss_sum / self.since)
            curves["test_error"].append(err)
            curves["lr"].append(self.sched.get_last_lr()[0])
            curves["elapsed_s"].append(round(run["train_time"], 4))
        self.loss_sum, self.since = 0.0, 0
        return None

    def detail(self, curves: dict) -> str | None:
        if not self.w.keeps_curves:
            return None
        return f"loss {curves['train_loss'][-1]:.4f} test error {curves['test_error'][-1]:.2f}%" \
            if curves["step"] else ""
