"""The speed claim, measured: a feed-forward net split over K worker processes ([DNI] Sec. 1, 3.3).

The net of `sgbench.models` (blocks, a DNI after each for dni / cdni, then the head) is cut into K
contiguous *stages*, one process each, talking through torch.distributed: gloo on CPU, NCCL when
every worker has a GPU of its own (with fewer GPUs than workers, gloo, messages staged through CPU).
The units are the blocks and the head; cuts fall between units, balanced by the FLOPs of a
training step of each unit (its block, its SG model), unless `split` gives the units per stage.

Every method runs on the same K workers:

* `backprop`: K = 1 is single-process backprop. K > 1 is the *locked pipeline*: a stage runs its
  forward, sends the activation up, and waits until the gradient of that batch comes back down
  before it updates and takes the next batch. It computes exactly the single-process run; at any
  time one stage is busy and the others wait.
* `dni` / `cdni`: a DNI after every block, as in `train-ff`. A stage runs its forward, sends the
  activation up, and updates at once from the synthetic gradient of its top boundary; it never
  waits for the stages above. The stage above computes the gradient at its input for that batch
  (true at the head, else bootstrapped: its own SG backpropagated through its first block) and sends
  it down, where it arrives while the lower stage works on the next batch.
  *Staleness, and how it is used:* at step t a stage receives the gradient of batch t-1 and regresses
  its top SG model towards it, evaluating the SG model (current parameters) again on batch t-1's
  activation, which the stage kept. So the one thing that lags is what a cut boundary's SG model
  learns from (one step late, and one extra SG forward per step); no layer ever updates from a stale
  gradient, and boundaries inside a stage are exactly those of the single-process run. With K = 1
  the run is the single-process DNI run.

Both protocols fix the order of every message, so a run's numbers do not depend on timing: a seed
gives the same result on any machine speed. Timing: each worker counts the seconds it computes and
the seconds it waits for a neighbour; evaluation passes (all stages, pipelined) are off the clock.
A worker that fails or is killed ends the run: the others are stopped and the error names it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ... import runtime
from ...data import as_input
from ...dni import one_hot
from ..feedforward.run import BatchStream, build_net, load_run_data, lr_schedule
from .config import ParallelConfig, ParallelRunError
from .model import balanced_split, predicted_step_s, stage_bounds

log = logging.getLogger(__name__)
TAG_UP, TAG_DOWN, TAG_EVAL = 1, 2, 3     # activations up, gradients down, evaluation activations up
EVAL_BATCH = 1000                        # as feedforward's test_error
PROFILE_STEPS = 20                       # timed repetitions of each unit, for the analytic model


# ---------------------------------------------------------------- stages
class Stage(nn.Module):
    """Units lo..hi-1 of a FeedForwardNet (units: its blocks, then the head) and their DNIs."""

    def __init__(self, net, lo: int, hi: int):
        super().__init__()
        n_blocks = len(net.blocks)
        self.blocks = nn.ModuleList(net.blocks[lo:min(hi, n_blocks)])
        self.boundaries = None if net.boundaries is None else nn.ModuleList(net.boundaries[lo:min(hi, n_blocks)])
        for boundary in self.boundaries or []:
            boundary.inject = "now"  # no loss is backpropagated through a stage below the head: inject at once
        self.head = net.head if hi == n_blocks + 1 else None
        self.num_classes, self.conditioned = net.num_classes, net.conditioned

    @property
    def top_boundary(self):
        """The DNI on the stage's output (None for the last stage, or without SGs)."""
        return None if (self.head is not None or self.boundaries is None) else self.boundaries[-1]

    def context(self, y):
        return one_hot(y, self.num_classes) if (self.conditioned and y is not None) else None

    def forward(self, h, y=None):
        """The stage's output: the activation to send up, or the logits for the last stage. In
        training every DNI injects its synthetic gradient as it goes (sgbench.dni)."""
        context = self.context(y)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if self.boundaries is not None:
                h = self.boundaries[i](h, context)
        return h if self.head is None else self.head(h)


def unit_flops(net, in_shape) -> list[float]:
    """FLOPs per example of one training step of each unit: 3x its forward (forward + backward),
    counting the block and its SG model. Decides where the stages are cut."""
    net = net.eval()
    flops, h = [], torch.zeros(2, *in_shape)
    units = list(zip(net.blocks, net.boundaries or [None] * len(net.blocks))) + [(net.head, None)]
    with torch.no_grad():
        for block, boundary in units:
            counter = FlopCounterMode(display=False)
            with counter:
                h = block(h)
                if boundary is not None:
                    ctx = torch.zeros(2, net.num_classes) if boundary.conditioned else None
                    boundary.sg_model(h, ctx)
            flops.append(3 * counter.get_total_flops() / 2)
    net.train()
    return flops


# ---------------------------------------------------------------- messages
class Link:
    """Ordered point-to-point messages with one neighbour. Sends never block the sender; receives
    block, and the seconds spent blocked are counted as waiting."""

    def __init__(self, peer: int, device: torch.device, staged: bool):
        self.peer, self.device, self.staged = peer, device, staged
        self.in_flight: list = []  # (work, tensor): a sent tensor must outlive its send
        self.wait_s = 0.0

    def send(self, tensor: torch.Tensor, tag: int) -> None:
        t = tensor.detach()
        t = (t.cpu() if self.staged else t).contiguous()
        self.in_flight = [(w, b) for w, b in self.in_flight if not w.is_completed()]
        self.in_flight.append((dist.isend(t, self.peer, tag=tag), t))

    def recv(self, shape, tag: int, dtype=torch.float32) -> torch.Tensor:
        buf = torch.empty(shape, dtype=dtype, device="cpu" if self.staged else self.device)
        t0 = time.perf_counter()
        dist.recv(buf, self.peer, tag=tag)
        self.wait_s += time.perf_counter() - t0
        return buf.to(self.device)

    def close(self) -> None:
        for work, _ in self.in_flight:
            work.wait()
        self.in_flight = []


@dataclass
class Worker:
    """One stage's process: its part of the net and its links to the neighbouring stages."""
    rank: int
    stage: Stage
    in_shape: tuple          # per example, of what arrives from below (the image for stage 0)
    out_shape: tuple         # per example, of what goes up
    below: Link | None
    above: Link | None
    device: torch.device

    def receive_batch(self, batch_size: int):
        """(activation, labels) from the stage below; the activation is a leaf whose .grad the
        backward fills, to send down."""
        h = self.below.recv((batch_size, *self.in_shape), TAG_UP).requires_grad_()
        y = self.below.recv((batch_size,), TAG_UP, torch.int64)
        return h, y

    def send_up(self, h, y, tag: int = TAG_UP) -> None:
        self.above.send(h, tag)
        if y is not None:
            self.above.send(y, tag)

    def wait_s(self) -> float:
        return sum(link.wait_s for link in (self.below, self.above) if link is not None)


def locked_step(w: Worker, opt, x, y):
    """Backprop over the workers: wait for the gradient of this very batch before updating."""
    opt.zero_grad(set_to_none=True)
    out, loss = w.stage(x), None
    if w.above is not None:
        w.send_up(out, y)
        out.backward(w.above.recv(out.shape, TAG_DOWN))
    else:
        loss = F.cross_entropy(out, y)
        loss.backward()
    if w.below is not None:
        w.below.send(x.grad, TAG_DOWN)
    opt.step()
    return loss


def decoupled_step(w: Worker, opt, x, y, kept: list):
    """DNI over the workers: update from the synthetic gradient now; learn the top SG model from the
    gradient of the previous batch, which arrives meanwhile. `kept` holds that batch's (h, context)."""
    opt.zero_grad(set_to_none=True)
    out, loss = w.stage(x, y), None  # every DNI in the stage has injected its SG into the layers below it
    if w.above is not None:
        w.send_up(out, y)
    else:
        loss = F.cross_entropy(out, y)
        loss.backward()
    if w.below is not None:
        w.below.send(x.grad, TAG_DOWN)
    if w.above is not None:
        if kept:
            h_prev, ctx_prev = kept.pop()
            w.stage.top_boundary.learn(h_prev, ctx_prev, w.above.recv(h_prev.shape, TAG_DOWN))
        kept.append((out.detach(), w.stage.context(y)))
    opt.step()
    return loss


@torch.no_grad()
def pipeline_test_error(w: Worker, test_x, test_y) -> float | None:
    """Test error (%) of the real forward chain, run through every stage (the last one returns it)."""
    w.stage.eval()
    wrong, n = 0, len(test_y)
    for i in range(0, n, EVAL_BATCH):
        nb = min(EVAL_BATCH, n - i)
        h = as_input(test_x[i:i + nb].to(w.device)) if w.below is None else w.below.recv((nb, *w.in_shape), TAG_EVAL)
        out = w.stage(h)
        if w.above is not None:
            w.send_up(out, None, TAG_EVAL)
        else:
            wrong += (out.argmax(1) != test_y[i:i + nb].to(w.device)).sum().item()
    w.stage.train()
    return 100.0 * wrong / n if w.above is None else None


def link_latency(w: Worker, batch_size: int, rounds: int = 30) -> float | None:
    """Seconds for one activation-sized message to the stage above (half a round trip, median)."""
    times = []
    for i in range(rounds + 5):
        if w.below is not None:  # echo what the stage below sends
            w.below.send(w.below.recv((batch_size, *w.in_shape), TAG_EVAL), TAG_EVAL)
        if w.above is not None:
            msg = torch.zeros(batch_size, *w.out_shape, device=w.device)
            t0 = time.perf_counter()
            w.above.send(msg, TAG_EVAL)
            w.above.recv(msg.shape, TAG_EVAL)
            if i >= 5:
                times.append((time.perf_counter() - t0) / 2)
    for link in (w.below, w.above):
        if link is not None:
            link.wait_s = 0.0
    return statistics.median(times) if times else None


# ---------------------------------------------------------------- one worker process
def worker_device(cfg: ParallelConfig, rank: int) -> tuple[torch.device, str]:
    """(device, backend): NCCL with one GPU per worker, else gloo (on a shared GPU, staged through CPU)."""
    device = runtime.resolve_device(cfg.device)
    if device.type != "cuda":
        return device, "gloo"
    if torch.cuda.device_count() >= cfg.workers:
        return torch.device("cuda", rank), "nccl"
    return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index), "gloo"


def run_worker(rank: int, cfg: ParallelConfig, out_dir: str, port: int, split: list[int]) -> None:
    """Entry point of worker `rank` (spawned): train its stage, write its share of the results."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {rank} %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(cfg.threads)
    device, backend = worker_device(cfg, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=cfg.workers, timeout=timedelta(seconds=cfg.peer_timeout_s))
    log.info("pid %d, units %s of %d, %s on %s", os.getpid(), stage_bounds(split)[rank], sum(split), backend, device)
    try:
        result = train_stage(rank, cfg, device, backend, split)
        runtime.atomic_write_json(Path(out_dir) / f".worker{rank}.json", result)
    finally:
        dist.destroy_process_group()


def train_stage(rank: int, cfg: ParallelConfig, device, backend: str, split: list[int]) -> dict:
    torch.manual_seed(cfg.seed)  # every worker builds the whole net from the seed, then keeps its stage
    data, (train_x, train_y), (test_x, test_y) = load_run_data(cfg, device)
    net = build_net(cfg, data).to(device)
    lo, hi = stage_bounds(split)[rank]
    shapes = [tuple(data.input_shape), *net.block_shapes, (net.num_classes,)]  # what enters each unit, then the logits
    staged = backend == "gloo" and device.type == "cuda"
    w = Worker(rank, Stage(net, lo, hi), shapes[lo], shapes[hi],
               Link(rank - 1, device, staged) if rank > 0 else None,
               Link(rank + 1, device, staged) if rank < cfg.workers - 1 else None, device)
    opt = torch.optim.Adam([p for p in w.stage.parameters() if p.requires_grad], lr=cfg.lr)
    sched = lr_schedule(opt, cfg)
    stream = BatchStream(len(train_y), cfg.batch_size, cfg.seed) if rank == 0 else None
    batch = min(cfg.batch_size, len(train_y))  # BatchStream's batch, known to every worker
    latency = link_latency(w, batch)
    dist.barrier()

    curves = {"step": [], "train_loss": [], "test_error": [], "lr": [], "elapsed_s": []}
    train_s, loss_sum, since, kept, last_log = 0.0, 0.0, 0, [], time.perf_counter()
    for step in range(1, cfg.iterations + 1):
        t0 = time.perf_counter()
        if stream is not None:
            idx = stream.next().to(device)
            x, y = as_input(train_x[idx]), train_y[idx]
        else:
            x, y = w.receive_batch(batch)
        if cfg.method == "backprop":
            loss = locked_step(w, opt, x, y)
        else:
            loss = decoupled_step(w, opt, x, y, kept)
        sched.step()
        _sync(device)  # GPU work is asynchronous: count it in the step that launched it
        train_s += time.perf_counter() - t0
        if loss is not None:
            loss_sum, since = loss_sum + loss.item(), since + 1
        if step % cfg.eval_every == 0 or step == cfg.iterations:
            err = pipeline_test_error(w, test_x, test_y)
            if w.above is None:  # the last stage keeps the curves
                curves["step"].append(step)
                curves["train_loss"].append(loss_sum / since)
                curves["test_error"].append(err)
                curves["lr"].append(sched.get_last_lr()[0])
                curves["elapsed_s"].append(round(train_s, 4))
                loss_sum, since = 0.0, 0
                if time.perf_counter() - last_log > 10 or step == cfg.iterations:
                    log.info(runtime.progress_line(step, cfg.iterations, train_s,
                                                 f"loss {curves['train_loss'][-1]:.4f} test error {err:.2f}%"))
                    last_log = time.perf_counter()
    if kept:  # the gradient of the last batch: received so that its send completes, not learnt from
        w.above.recv(kept[0][0].shape, TAG_DOWN)
    for link in (w.below, w.above):
        if link is not None:
            link.close()
    dist.barrier()
    return {"rank": rank, "units": [lo, hi], "train_s": train_s, "wait_s": w.wait_s(),
            "link_latency_s": latency, "curves": curves if w.above is None else None}


# ---------------------------------------------------------------- the analytic model
def profile_units(cfg: ParallelConfig, net, data, device) -> tuple[list[float], list[float]]:
    """Per unit, seconds of one training step of it alone (reading the batch for the first unit;
    forward, SG injection, backward, SG learning, Adam) and of the late SG regression a cut adds when
    the unit tops a stage (one more SG forward and backward); medians of PROFILE_STEPS on one
    worker's threads. The analytic model's compute terms. Runs on the parent's copy of the net."""
    train_x = data.train_x.to(device)
    idx = torch.randperm(len(train_x), device=device)[:cfg.batch_size]
    x, y = as_input(train_x[idx]), data.train_y.to(device)[idx]
    inputs, h = [], x
    with torch.no_grad():
        for block in net.blocks:
            inputs.append(h)
            h = block(h)
    inputs.append(h)
    step_s, cut_s = [], []
    for k in range(len(net.blocks) + 1):
        stage = Stage(net, k, k + 1)
        opt = torch.optim.Adam([p for p in stage.parameters() if p.requires_grad], lr=cfg.lr)

        def unit_step():
            opt.zero_grad(set_to_none=True)
            h_in = as_input(train_x[idx]) if k == 0 else inputs[k].clone().requires_grad_()  # stage 0 reads the data
            out = stage(h_in, y)
            if stage.head is not None:
                F.cross_entropy(out, y).backward()
            else:
                out.backward(torch.ones_like(out) / len(y))
            opt.step()
            return out.detach()

        out = unit_step()
        step_s.append(_median_time(unit_step, device))
        top = stage.top_boundary
        cut_s.append(0.0 if top is None else
                     _median_time(lambda: top.learn(out, stage.context(y), torch.ones_like(out) / len(y)), device))
    net.zero_grad(set_to_none=True)
    return step_s, cut_s


def _median_time(fn, device, warmup: int = 3) -> float:
    times = []
    for i in range(warmup + PROFILE_STEPS):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- the run
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_parallel(config: ParallelConfig, out_dir) -> dict:
    """Train one run on `workers` processes; returns the metrics also written to out_dir/metrics.json.
    Restarts from scratch when rerun (a timing run is not resumed)."""
    t_start = time.perf_counter()
    cfg = config.resolved()
    out_dir, device, meta = runtime.start_run(cfg, out_dir)
    if device.type == "cuda" and torch.cuda.device_count() < cfg.workers:
        log.warning("%d workers share %d GPU(s): gloo, messages staged through CPU; timings are not those of "
                    "one GPU per worker", cfg.workers, torch.cuda.device_count())
    data, (train_x, _), (test_x, test_y) = load_run_data(cfg, torch.device("cpu"))
    net = build_net(cfg, data)  # on the seed, as every worker builds it: for FLOPs and the profile
    flops = unit_flops(net, data.input_shape)
    split = list(cfg.split or balanced_split(flops, cfg.workers))
    unit_s, cut_s = profile_units(cfg, net.to(device), data, device)
    for stale in out_dir.glob(".worker*.json"):
        stale.unlink()
    (out_dir / "metrics.json").unlink(missing_ok=True)

    log.info("train-parallel %s/%s-%d/%s seed %d: %d workers, units per worker %s, %d iterations",
             data.name, cfg.arch, cfg.layers, cfg.method, cfg.seed, cfg.workers, split, cfg.iterations)
    spawn_workers(cfg, out_dir, split)
    results = []
    for k in range(cfg.workers):
        path = out_dir / f".worker{k}.json"
        results.append(json.loads(path.read_text()))
        path.unlink()
    metrics = assemble_metrics(cfg, data, (len(train_x), len(test_y)), net, flops, split, (unit_s, cut_s),
                               results, meta)
    metrics["timing"]["wall_time_s"] = round(time.perf_counter() - t_start, 3)
    runtime.validate(metrics, "parallel_metrics")
    runtime.atomic_write_json(out_dir / "metrics.json", metrics)
    t = metrics["timing"]
    log.info("done: test error %.2f%%, %.0f samples/s, time to %.1f%%: %s -> %s", metrics["final"]["test_error"],
             t["samples_per_s"], cfg.target_error, t["time_to_target_s"], out_dir / "metrics.json")
    return metrics


def spawn_workers(cfg: ParallelConfig, out_dir: Path, split: list[int]) -> None:
    """Run the workers to the end. If one fails or is killed, stop the others and raise
    ParallelRunError naming it; on Ctrl-C stop them all. No worker outlives this call."""
    ctx = mp.start_processes(run_worker, args=(cfg, str(out_dir), free_port(), split), nprocs=cfg.workers,
                             join=False, start_method="spawn")
    try:
        while not ctx.join(timeout=1):
            pass
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
        bounds = stage_bounds(split)[e.error_index]
        raise ParallelRunError(f"worker {e.error_index} of {cfg.workers} (units {bounds[0]}..{bounds[1] - 1}) "
                               f"failed, the others were stopped: {str(e).strip().splitlines()[-1]}") from e
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join()


def assemble_metrics(cfg, data, sizes, net, flops, split, profile, results, meta) -> dict:
    n_train, n_test = sizes
    unit_s, cut_s = profile
    curves = results[-1]["curves"]
    batch = min(cfg.batch_size, n_train)
    train_s = max(r["train_s"] for r in results)
    hit = [t for t, e in zip(curves["elapsed_s"], curves["test_error"]) if e <= cfg.target_error]
    latencies = [r["link_latency_s"] for r in results if r["link_latency_s"] is not None]
    latency = statistics.mean(latencies) if latencies else 0.0
    return {
        "schema": "sgbench.parallel_metrics/1",
        "status": "complete",
        "experiment": "parallel",
        "tier": cfg.tier,
        "config": dataclasses.asdict(cfg),
        "dataset": {"requested": cfg.dataset, "variant": data.name, "source": data.source,
                    "n_train": n_train, "n_test": n_test},
        "model": {"parameters": sum(p.numel() for p in net.model_parameters()),
                  "sg_parameters": sum(p.numel() for p in net.sg_parameters()),
                  "units": len(flops), "split": split, "unit_flops": flops},
        "curves": curves,
        "final": {"test_error": curves["test_error"][-1], "train_loss": curves["train_loss"][-1]},
        "timing": {
            "train_time_s": round(train_s, 4),
            "samples_per_s": round(cfg.iterations * batch / train_s, 2),
            "step_s": train_s / cfg.iterations,
            "time_to_target_s": hit[0] if hit else None,
            "workers": [{"rank": r["rank"], "units": r["units"], "train_s": round(r["train_s"], 4),
                         "wait_s": round(r["wait_s"], 4)} for r in results],
            "unit_step_s": unit_s,
            "unit_cut_s": cut_s,
            "link_latency_s": latency,
            "predicted_step_s": predicted_step_s(cfg.method, unit_s, cut_s, split, latency),
        },
        "meta": meta,
    }
