"""The speed question, measured: a feed-forward net trained on K worker processes ([DNI] Sec. 1, 3.3;
issue #15: against data parallelism and a real pipeline schedule).

Workers talk through torch.distributed: gloo on CPU, NCCL when every worker has a GPU of its own
(with fewer GPUs than workers, gloo, messages staged through CPU). Every method is a row of METHODS
(data); its `protocol` says how the K workers share the work:

* `locked` (backprop): the net is cut into K contiguous stages, one per worker (units: the blocks,
  then the head; cuts balanced by the FLOPs of a training step of each unit unless `split` gives
  them). K = 1 is single-process backprop. K > 1 is the naive locked pipeline: a stage runs its
  forward, sends the activation up and waits for the gradient of that very batch before it updates
  and takes the next batch. It computes exactly the single-process run; one stage is busy at a time.
* `pipelined` (gpipe, 1f1b): the same stages, but each batch is cut into `microbatches` micro-batches
  that flow through the stages one after another (torch.distributed.pipelining: ScheduleGPipe runs
  every forward then every backward, Schedule1F1B alternates them once the pipe is full, which bounds
  the activations kept). Gradients are accumulated over the micro-batches and each stage updates once
  per batch: the gradient of single-process backprop over the micro-batches (BatchNorm normalises each
  micro-batch with its own statistics). The label of each example is read by the last stage from the
  data set itself: every worker draws the same batches from the seed.
* `data_parallel` (ddp_split, ddp_keep): every worker holds the whole net
  (DistributedDataParallel: gradients averaged over workers by all-reduce each step). ddp_split cuts
  the global batch of `batch_size` examples into K shares (same samples per step as backprop);
  ddp_keep gives each worker `batch_size` examples (K x the global batch per step). Same optimizer
  settings as single-process backprop. BatchNorm normalises each worker's share with its own
  statistics (SyncBatchNorm exists for GPUs only), so ddp_split is single-process backprop on the
  same global batch with per-share BatchNorm statistics; the running statistics are worker 0's.
* `decoupled` (dni, cdni): stages as in `locked`, a DNI after every block. A stage runs its forward,
  sends the activation up, and updates at once from the synthetic gradient of its top boundary; it
  never waits for the stages above. The stage above computes the gradient at its input for that batch
  (true at the head, else bootstrapped) and sends it down, where it arrives while the lower stage works
  on the next batch. So the top SG model of a cut learns one batch late; `late_sg` says how:
  - `reevaluate`: at step t the stage regresses its top SG model, evaluated *again with its current
    parameters* on batch t-1's kept activation, towards batch t-1's gradient (one extra SG forward
    and backward per step). Late: the (input, target) pair, by one batch.
  - `stored`: the prediction the SG model made for batch t-1 (the one injected at step t-1) is kept
    with its graph, computed on a snapshot of the SG parameters of that moment; at step t its error
    against batch t-1's gradient is backpropagated through that graph (no second SG forward), and the
    resulting parameter gradient is applied to the current parameters. Late: the (input, target) pair
    by one batch *and* the parameters the gradient is taken at, by one update (the delay-1 staleness
    of asynchronous SGD), at the cost of a parameter copy per step instead of an SG forward.
  No layer ever updates from a stale gradient in either variant; boundaries inside a stage are those
  of the single-process run. With K = 1 both variants are the single-process DNI run.

Every protocol fixes the order of every message, so a seed gives the same result at any machine speed
(data_parallel up to the all-reduce's float summation order). Timing: each worker counts the seconds
it computes and the seconds it waits for a neighbour; evaluation passes are off the clock.
A worker that fails or is killed ends the run: the others are stopped and the error names it.
A non-finite training loss ends the run as `status: diverged`: workers learn of it at the next
evaluation (a collective, off the clock), and the curves stop at the last finite evaluation.
A timing run is never resumed: rerun, it restarts from scratch and says so (`meta.restarted`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
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
EVAL_BATCH = 1000                        # as the feed-forward family's test error
PROFILE_STEPS = 20                       # timed repetitions of each unit, for the analytic model
STARTED = ".started"                     # marker: an attempt of this run began in this folder


# ---------------------------------------------------------------- stages
class Stage(nn.Module):
    """Units lo..hi-1 of a FeedForwardNet (units: its blocks, then the head) and their DNIs.
    `top_call(boundary, h, context)`, when set, evaluates the top boundary instead of calling it
    (the stored late-SG variant evaluates it on a parameter snapshot)."""

    def __init__(self, net, lo: int, hi: int):
        super().__init__()
        n_blocks = len(net.blocks)
        self.blocks = nn.ModuleList(net.blocks[lo:min(hi, n_blocks)])
        self.boundaries = None if net.boundaries is None else nn.ModuleList(net.boundaries[lo:min(hi, n_blocks)])
        for boundary in self.boundaries or []:
            boundary.inject = "now"  # no loss is backpropagated through a stage below the head: inject at once
        self.head = net.head if hi == n_blocks + 1 else None
        self.num_classes, self.conditioned = net.num_classes, net.conditioned
        self.top_call = None

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
                top = i == len(self.blocks) - 1 and self.head is None
                h = (self.top_call(self.boundaries[i], h, context) if top and self.top_call and self.training
                     else self.boundaries[i](h, context))
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
    """One worker process: its part of the net (a stage, or the whole net for data parallelism) and
    its links to the neighbouring stages."""
    rank: int
    workers: int
    stage: nn.Module
    in_shape: tuple          # per example, of what arrives from below (the image for stage 0)
    out_shape: tuple         # per example, of what goes up
    below: Link | None
    above: Link | None
    device: torch.device

    @property
    def keeps_curves(self) -> bool:
        """The worker that evaluates the real chain's output: the last stage (data parallel: rank 0)."""
        return self.above is None and (self.below is not None or self.rank == 0)

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


# ---------------------------------------------------------------- one step of each protocol
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


class LateSG:
    """How a cut's top SG model learns from the gradient that comes back one batch late."""

    def __init__(self, stage: Stage, mode: str):
        self.stage, self.mode, self.kept = stage, mode, None
        if mode == "stored" and stage.top_boundary is not None:
            stage.top_call = self.predict_on_snapshot

    def predict_on_snapshot(self, boundary, h, context):
        """Evaluate the top boundary with a copy of its parameters as they are now, so the graph of
        this prediction survives the in-place optimizer updates until its target arrives."""
        snapshot = {name: p.detach().clone().requires_grad_() for name, p in boundary.named_parameters()}
        out = torch.func.functional_call(boundary, snapshot, (h, context))
        self.snapshot = snapshot
        return out

    def keep(self, out, y) -> None:
        """Remember what the late gradient of this batch will train: its activation (reevaluate) or
        the prediction's graph and parameter snapshot (stored)."""
        if self.mode == "reevaluate":
            self.kept = (out.detach(), self.stage.context(y))
        else:
            self.kept = (out, self.snapshot)

    def learn(self, grad) -> None:
        """Accumulate into the top SG model's .grad the gradient of its loss against `grad`, the true
        or bootstrapped gradient of the kept batch."""
        top = self.stage.top_boundary
        if self.mode == "reevaluate":
            h_prev, ctx_prev = self.kept
            top.learn(h_prev, ctx_prev, grad)
            return
        out_prev, snapshot = self.kept
        out_prev.backward(grad)  # through the stored prediction's graph into the snapshot
        for name, p in top.named_parameters():
            g = snapshot[name].grad
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g


def decoupled_step(w: Worker, opt, x, y, late: LateSG):
    """DNI over the workers: update from the synthetic gradient now; learn the top SG model from the
    gradient of the previous batch, which arrives meanwhile."""
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
        if late.kept is not None:
            late.learn(w.above.recv(out.shape, TAG_DOWN))
        late.keep(out, y)
    opt.step()
    return loss


def pipelined_step(w: Worker, schedule, opt, x, y):
    """One batch through torch.distributed.pipelining: the schedule runs every micro-batch's forward
    and backward on this stage and accumulates the gradients (scaled to the batch mean); then update."""
    opt.zero_grad(set_to_none=True)
    first, last = w.below is None, w.above is None
    losses = [] if last else None
    kwargs = {"target": y, "losses": losses} if last else {}
    schedule.step(*((x,) if first else ()), return_outputs=False, **kwargs)
    opt.step()
    return torch.stack(losses).mean() if last else None


def data_parallel_step(ddp, opt, x, y):
    """One step of DistributedDataParallel: the backward all-reduces (averages) the gradients."""
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(ddp(x), y)
    loss.backward()
    opt.step()
    return loss


# ---------------------------------------------------------------- evaluation and probes
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


@torch.no_grad()
def replica_test_error(w: Worker, test_x, test_y) -> float | None:
    """Data parallel: every replica holds the same parameters; rank 0 evaluates."""
    if w.rank != 0:
        return None
    return pipeline_test_error(w, test_x, test_y)


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


def allreduce_time(params, device, workers: int, rounds: int = 20) -> float | None:
    """Seconds of one all-reduce of every gradient (one flat buffer of the parameters' size; median):
    the data-parallel term of the analytic model."""
    if workers == 1:
        return None
    buf = torch.zeros(sum(p.numel() for p in params), device=device)
    times = []
    for i in range(rounds + 3):
        _sync(device)
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def first_divergence(local_step: int, device) -> int:
    """The earliest step any worker saw a non-finite loss (0: none), agreed by every worker."""
    flag = torch.tensor([float(local_step) if local_step else math.inf], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return 0 if math.isinf(flag.item()) else int(flag.item())


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
    """Entry point of worker `rank` (spawned): train its part, write its share of the results."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {rank} %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(cfg.threads)
    device, backend = worker_device(cfg, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=cfg.workers, timeout=timedelta(seconds=cfg.peer_timeout_s))
    part = "the whole net" if cfg.spec.protocol == "data_parallel" else f"units {stage_bounds(split)[rank]}"
    log.info("pid %d, %s of %d, %s on %s", os.getpid(), part, sum(split), backend, device)
    try:
        result = train_worker(rank, cfg, device, backend, split, out_dir)
        runtime.atomic_write_json(Path(out_dir) / f".worker{rank}.json", result)
    finally:
        dist.destroy_process_group()


def build_worker(rank: int, cfg: ParallelConfig, net, data, device, backend: str, split: list[int]) -> Worker:
    staged = backend == "gloo" and device.type == "cuda"
    if cfg.spec.protocol == "data_parallel":
        return Worker(rank, cfg.workers, net, tuple(data.input_shape), (net.num_classes,), None, None, device)
    lo, hi = stage_bounds(split)[rank]
    shapes = [tuple(data.input_shape), *net.block_shapes, (net.num_classes,)]  # what enters each unit, then the logits
    return Worker(rank, cfg.workers, Stage(net, lo, hi), shapes[lo], shapes[hi],
                  Link(rank - 1, device, staged) if rank > 0 else None,
                  Link(rank + 1, device, staged) if rank < cfg.workers - 1 else None, device)


def make_stepper(cfg: ParallelConfig, w: Worker, opt, device):
    """(step(x, y) -> loss or None, the decoupled stage's LateSG or None) for this worker's protocol
    (a row of METHODS decides)."""
    spec = cfg.spec
    if spec.protocol == "locked":
        return (lambda x, y: locked_step(w, opt, x, y)), None
    if spec.protocol == "decoupled":
        late = LateSG(w.stage, cfg.late_sg)
        return (lambda x, y: decoupled_step(w, opt, x, y, late)), late
    if spec.protocol == "data_parallel":
        ddp = nn.parallel.DistributedDataParallel(w.stage, device_ids=[device.index] if device.type == "cuda" else None)
        return (lambda x, y: data_parallel_step(ddp, opt, x, y)), None
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
    schedule_class = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[spec.schedule]
    pstage = PipelineStage(w.stage, w.rank, cfg.workers, device)
    schedule = schedule_class(pstage, n_microbatches=cfg.microbatches, loss_fn=F.cross_entropy)
    return (lambda x, y: pipelined_step(w, schedule, opt, x, y)), None


class Batches:
    """This worker's share of each step's batch. Every worker draws the same global batch from the
    seed; who reads the data depends on the protocol (stage methods: stage 0 the images, the last
    pipelined stage the labels; data parallel: every worker its own share)."""

    def __init__(self, cfg: ParallelConfig, w: Worker, train_x, train_y):
        self.cfg, self.w, self.x, self.y = cfg, w, train_x, train_y
        self.global_batch = cfg.global_batch(len(train_y))
        self.stream = BatchStream(len(train_y), self.global_batch, cfg.seed)
        self.protocol = cfg.spec.protocol

    def next(self):
        w = self.w
        if self.protocol in ("locked", "decoupled") and w.below is not None:
            self.stream.next()  # keep the stream in step; the batch arrives from below
            return w.receive_batch(self.global_batch)
        idx = self.stream.next().to(w.device)
        if self.protocol == "data_parallel":
            per = self.global_batch // self.cfg.workers
            idx = idx[w.rank * per:(w.rank + 1) * per]
        x = as_input(self.x[idx]) if (w.below is None or self.protocol == "data_parallel") else None
        return x, self.y[idx]


def train_worker(rank: int, cfg: ParallelConfig, device, backend: str, split: list[int], out_dir: str) -> dict:
    torch.manual_seed(cfg.seed)  # every worker builds the whole net from the seed, then keeps its part
    data, (train_x, train_y), (test_x, test_y) = load_run_data(cfg, device)
    net = build_net(dataclasses.replace(cfg, method=cfg.spec.net), data).to(device)
    w = build_worker(rank, cfg, net, data, device, backend, split)
    opt = torch.optim.Adam([p for p in w.stage.parameters() if p.requires_grad], lr=cfg.lr)
    sched = lr_schedule(opt, cfg)
    batches = Batches(cfg, w, train_x, train_y)
    latency = link_latency(w, batches.global_batch) if cfg.spec.protocol != "data_parallel" else None
    allreduce = (allreduce_time(list(w.stage.parameters()), device, cfg.workers)
                 if cfg.spec.protocol == "data_parallel" else None)
    step_fn, late = make_stepper(cfg, w, opt, device)
    evaluate = replica_test_error if cfg.spec.protocol == "data_parallel" else pipeline_test_error
    dist.barrier()

    curves = {"step": [], "train_loss": [], "test_error": [], "lr": [], "elapsed_s": []}
    train_s, loss_sum, since, bad_step, diverged, last_log = 0.0, 0.0, 0, 0, None, time.perf_counter()
    for step in range(1, cfg.iterations + 1):
        t0 = time.perf_counter()
        x, y = batches.next()
        loss = step_fn(x, y)
        sched.step()
        _sync(device)  # GPU work is asynchronous: count it in the step that launched it
        train_s += time.perf_counter() - t0
        if loss is not None:
            value = loss.item()
            if not math.isfinite(value):
                bad_step = bad_step or step
            loss_sum, since = loss_sum + value, since + 1
        if step % cfg.eval_every == 0 or step == cfg.iterations:
            first_bad = first_divergence(bad_step, device)
            if first_bad:
                diverged = {"step": first_bad, "last_finite": _last_finite(curves)}
                log.warning("non-finite training loss at step %d: the run stops (status diverged)", first_bad)
                break
            err = evaluate(w, test_x, test_y)
            dist.barrier()  # no worker starts the next step's clock while another still evaluates
            if w.keeps_curves:
                curves["step"].append(step)
                curves["train_loss"].append(loss_sum / since)
                curves["test_error"].append(err)
                curves["lr"].append(sched.get_last_lr()[0])
                curves["elapsed_s"].append(round(train_s, 4))
                if time.perf_counter() - last_log > 10 or step == cfg.iterations:
                    log.info(runtime.progress_line(step, cfg.iterations, train_s,
                                                   f"loss {curves['train_loss'][-1]:.4f} test error {err:.2f}%"))
                    last_log = time.perf_counter()
            loss_sum, since = 0.0, 0
    finish_links(w, late)
    if cfg.save_params:
        runtime.atomic_torch_save(Path(out_dir) / f"params-{rank}.pt", {
            "params": {n: p.detach().cpu() for n, p in w.stage.named_parameters()},
            "grads": {n: p.grad.detach().cpu() for n, p in w.stage.named_parameters() if p.grad is not None}})
    dist.barrier()
    return {"rank": rank, "units": list(stage_bounds(split)[rank]) if cfg.spec.protocol != "data_parallel"
            else [0, sum(split)], "train_s": train_s, "wait_s": w.wait_s(), "steps": step,
            "link_latency_s": latency, "allreduce_s": allreduce,
            "curves": curves if w.keeps_curves else None, "diverged": diverged}


def _last_finite(curves: dict) -> dict:
    return {k: curves[k][-1] for k in ("train_loss", "test_error") if curves[k]}


def finish_links(w: Worker, late: LateSG | None) -> None:
    """Receive the gradient of the last batch a decoupled stage sent up (so its send completes; it
    is not learnt from), then wait for every send to complete."""
    if late is not None and late.kept is not None and w.above is not None:
        w.above.recv(late.kept[0].shape, TAG_DOWN)
    for link in (w.below, w.above):
        if link is not None:
            link.close()


# ---------------------------------------------------------------- the analytic model
def profile_batches(cfg: ParallelConfig, n_train: int) -> list[int]:
    """Batch sizes at which every unit is timed: the batch, and the smallest share a method of the
    run uses (a micro-batch, a data-parallel share). Between them the model interpolates linearly."""
    batch = min(cfg.batch_size, n_train)
    small = {"pipelined": batch // cfg.microbatches, "data_parallel": max(2, batch // max(cfg.workers, 2))}
    return sorted({batch, small.get(cfg.spec.protocol, batch)})


def profile_units(cfg: ParallelConfig, net, data, device, batch: int) -> tuple[list[float], list[float], list[float]]:
    """Per unit, seconds of one training step of it alone on `batch` examples (reading the batch for
    the first unit; forward, SG injection, backward, SG learning, Adam) and of the late SG learning a
    cut adds when the unit tops a stage (reevaluate: one more SG forward and backward; stored: a
    parameter copy and a backward); medians of PROFILE_STEPS on one worker's threads. The analytic
    model's compute terms; and the seconds of the optimizer step alone (part of a unit's step). Runs on
    the parent's copy of the net."""
    train_x = data.train_x.to(device)
    idx = torch.randperm(len(train_x), device=device)[:batch]
    x, y = as_input(train_x[idx]), data.train_y.to(device)[idx]
    inputs, h = [], x
    with torch.no_grad():
        for block in net.blocks:
            inputs.append(h)
            h = block(h)
    inputs.append(h)
    step_s, cut_s, opt_s = [], [], []
    for k in range(len(net.blocks) + 1):
        stage = Stage(net, k, k + 1)
        late = LateSG(stage, cfg.late_sg)
        opt = torch.optim.Adam([p for p in stage.parameters() if p.requires_grad], lr=cfg.lr)

        def unit_forward():
            h_in = as_input(train_x[idx]) if k == 0 else inputs[k].clone().requires_grad_()  # stage 0 reads the data
            return stage(h_in, y)

        def unit_step():
            opt.zero_grad(set_to_none=True)
            out = unit_forward()
            if stage.head is not None:
                F.cross_entropy(out, y).backward()
            else:
                out.backward(torch.ones_like(out) / len(y))
            opt.step()
            return out

        unit_step()  # warm up
        step_s.append(_median_time(unit_step, device))
        opt_s.append(_median_time(opt.step, device))
        cut_s.append(0.0 if stage.top_boundary is None else _median_time(lambda: _late_learn(late, unit_forward, y), device, timed_inside=True))
        stage.top_call = None
    net.zero_grad(set_to_none=True)
    return step_s, cut_s, opt_s


def _late_learn(late: LateSG, unit_forward, y):
    """Seconds of one late SG learning (what a cut adds), on a freshly kept prediction."""
    late.keep(unit_forward(), y)
    t0 = time.perf_counter()
    late.learn(torch.ones_like(late.kept[0]) / len(y))
    return time.perf_counter() - t0


def _median_time(fn, device, warmup: int = 3, timed_inside: bool = False) -> float:
    """Median seconds of fn(); `timed_inside`: fn times the part that counts and returns it."""
    times = []
    for i in range(warmup + PROFILE_STEPS):
        _sync(device)
        t0 = time.perf_counter()
        inner = fn()
        _sync(device)
        if i >= warmup:
            times.append(inner if timed_inside else time.perf_counter() - t0)
    return statistics.median(times)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- the run
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def begin_attempt(out_dir: Path) -> bool:
    """Clear what an earlier attempt left; True when there was one (the run restarts by design: a
    timing run is never resumed, its seconds would mix two attempts)."""
    restarted = (out_dir / STARTED).exists() or (out_dir / "metrics.json").exists()
    for stale in out_dir.glob(".worker*.json"):
        stale.unlink()
    (out_dir / "metrics.json").unlink(missing_ok=True)
    runtime.atomic_write_json(out_dir / STARTED, {"pid": os.getpid()})
    if restarted:
        log.warning("an earlier attempt of this run was found in %s: a timing run restarts from scratch by design "
                    "(it is never resumed); metrics.json says meta.restarted = true", out_dir)
    return restarted


def train_parallel(config: ParallelConfig, out_dir) -> dict:
    """Train one run on `workers` processes; returns the metrics also written to out_dir/metrics.json."""
    t_start = time.perf_counter()
    cfg = config.resolved()
    out_dir, device, meta = runtime.start_run(cfg, out_dir)
    data, (train_x, _), (_, test_y) = load_run_data(cfg, torch.device("cpu"))  # a data error leaves no file
    restarted = begin_attempt(out_dir)
    meta = meta | {"restarted": restarted, "resumed": False}
    if device.type == "cuda" and torch.cuda.device_count() < cfg.workers:
        log.warning("%d workers share %d GPU(s): gloo, messages staged through CPU; timings are not those of "
                    "one GPU per worker", cfg.workers, torch.cuda.device_count())
    net = build_net(dataclasses.replace(cfg, method=cfg.spec.net), data)  # as every worker builds it
    flops = unit_flops(net, data.input_shape)
    units = len(flops)
    split = [units] if cfg.spec.protocol == "data_parallel" else list(cfg.split or balanced_split(flops, cfg.workers))
    net = net.to(device)
    profiles, cut_s, opt_s = {}, [], []
    for batch in profile_batches(cfg, len(train_x)):
        profiles[batch], cut_s, opt_s = profile_units(cfg, net, data, device, batch)

    log.info("train-parallel %s/%s-%d/%s seed %d: %d workers, %s, %d iterations", data.name, cfg.arch, cfg.layers,
             cfg.method, cfg.seed, cfg.workers, f"units per worker {split}" if cfg.spec.protocol != "data_parallel"
             else "a replica each", cfg.iterations)
    spawn_workers(cfg, out_dir, split)
    results = []
    for k in range(cfg.workers):
        path = out_dir / f".worker{k}.json"
        results.append(json.loads(path.read_text()))
        path.unlink()
    metrics = assemble_metrics(cfg, data, (len(train_x), len(test_y)), net, flops, split, (profiles, cut_s, opt_s),
                               results, meta)
    metrics["timing"]["wall_time_s"] = round(time.perf_counter() - t_start, 3)
    runtime.validate(metrics, "parallel_metrics")
    runtime.atomic_write_json(out_dir / "metrics.json", metrics)
    (out_dir / STARTED).unlink(missing_ok=True)
    t = metrics["timing"]
    log.info("done (%s): test error %s, %.0f samples/s -> %s", metrics["status"], metrics["final"]["test_error"],
             t["samples_per_s"], out_dir / "metrics.json")
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
        lo, hi = stage_bounds(split)[e.error_index]
        part = "a replica" if cfg.spec.protocol == "data_parallel" else f"units {lo}..{hi - 1}"
        raise ParallelRunError(f"worker {e.error_index} of {cfg.workers} ({part}) failed, the others were "
                               f"stopped: {str(e).strip().splitlines()[-1]}") from e
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join()


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def time_to_targets(cfg: ParallelConfig, curves: dict) -> list[dict]:
    """Per target: training seconds and step at the first evaluation with test error <= target."""
    out = []
    for target in cfg.targets:
        hit = [(t, s) for t, s, e in zip(curves["elapsed_s"], curves["step"], curves["test_error"]) if e <= target]
        out.append({"target_error": target, "seconds": hit[0][0] if hit else None, "step": hit[0][1] if hit else None})
    return out


def assemble_metrics(cfg, data, sizes, net, flops, split, profile, results, meta) -> dict:
    n_train, n_test = sizes
    profiles, cut_s, opt_s = profile
    owner = next(r for r in results if r["curves"] is not None)
    curves = {k: [_finite(v) for v in vals] for k, vals in owner["curves"].items()}
    diverged = next((r["diverged"] for r in results if r["diverged"]), None)
    batch = min(cfg.batch_size, n_train)
    global_batch = cfg.global_batch(n_train)
    steps = min(r["steps"] for r in results)
    train_s = max(max(r["train_s"] for r in results), 1e-9)
    latencies = [r["link_latency_s"] for r in results if r["link_latency_s"] is not None]
    latency = statistics.mean(latencies) if latencies else 0.0
    allreduces = [r["allreduce_s"] for r in results if r["allreduce_s"] is not None]
    allreduce = statistics.mean(allreduces) if allreduces else 0.0
    targets = time_to_targets(cfg, curves)
    metrics = {
        "schema": "sgbench.parallel_metrics/2",
        "status": "diverged" if diverged else "completed",
        "experiment": "parallel",
        "tier": cfg.tier,
        "config": dataclasses.asdict(cfg),
        "dataset": {"requested": cfg.dataset, "variant": data.name, "source": data.source,
                    "n_train": n_train, "n_test": n_test},
        "model": {"parameters": sum(p.numel() for p in net.model_parameters()),
                  "sg_parameters": sum(p.numel() for p in net.sg_parameters()),
                  "units": len(flops), "split": split, "unit_flops": flops,
                  "protocol": cfg.spec.protocol, "global_batch": global_batch},
        "curves": curves,
        "final": {"test_error": curves["test_error"][-1] if curves["test_error"] else None,
                  "train_loss": curves["train_loss"][-1] if curves["train_loss"] else None},
        "timing": {
            "train_time_s": round(train_s, 4),
            "samples_per_s": round(steps * global_batch / train_s, 2),
            "step_s": train_s / max(steps, 1),
            "time_to_target": targets,
            "workers": [{"rank": r["rank"], "units": r["units"], "train_s": round(r["train_s"], 4),
                         "wait_s": round(r["wait_s"], 4)} for r in results],
            "profile": [{"batch": b, "unit_step_s": s} for b, s in sorted(profiles.items())],
            "unit_step_s": profiles[batch],
            "unit_cut_s": cut_s,
            "unit_opt_s": opt_s,
            "link_latency_s": latency,
            "allreduce_s": allreduce,
            "predicted_step_s": predicted_step_s(cfg.method, profiles, cut_s, split, batch, latency, allreduce,
                                                 cfg.microbatches, cfg.workers, opt_s),
        },
        "meta": meta,
    }
    if diverged:
        metrics["diverged"] = diverged
    return metrics
