"""The four ways K workers share a feed-forward run ([DNI] Sec. 1, 3.3; issue #15), one class each:
how it cuts the net and builds a worker, steps, draws its batches, evaluates, measures its links
and predicts its step time (the analytic model, model.py). An unknown protocol is refused
(`protocol_of`), never run as another.

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
"""
from __future__ import annotations

import math
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ... import runtime
from ...data import as_input
from ..feedforward.run import BatchStream
from . import model
from .config import ParallelConfig, unknown_protocol
from .stages import TAG_DOWN, TAG_EVAL, Link, Stage, Worker, sync

EVAL_BATCH = 1000                        # as the feed-forward family's test error


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


def data_parallel_step(ddp, opt, x, y, precision: str = "fp32"):
    """One step of DistributedDataParallel: the backward all-reduces (averages) the gradients. The
    replica's forward at the run's precision (its stages' forward is Stage's, which handles it)."""
    opt.zero_grad(set_to_none=True)
    with runtime.autocast(precision, x.device):
        logits = ddp(x)
    loss = F.cross_entropy(logits.float(), y)
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
        sync(device)
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def first_divergence(local_step: int, device) -> int:
    """The earliest step any worker saw a non-finite loss (0: none), agreed by every worker."""
    flag = torch.tensor([float(local_step) if local_step else math.inf], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return 0 if math.isinf(flag.item()) else int(flag.item())



def finish_links(w: Worker, late: LateSG | None) -> None:
    """Receive the gradient of the last batch a decoupled stage sent up (so its send completes; it
    is not learnt from), then wait for every send to complete."""
    if late is not None and late.kept is not None and w.above is not None:
        w.above.recv(late.kept[0].shape, TAG_DOWN)
    for link in (w.below, w.above):
        if link is not None:
            link.close()


# ---------------------------------------------------------------- the protocols
class Batches:
    """This worker's share of each step's batch. Every worker draws the same global batch from the
    seed (so the stream stays in step everywhere); what a worker reads of it is its protocol's `take`."""

    def __init__(self, cfg: ParallelConfig, w: Worker, train_x, train_y):
        self.cfg, self.w, self.x, self.y = cfg, w, train_x, train_y
        self.global_batch = cfg.global_batch(len(train_y))
        self.stream = BatchStream(len(train_y), self.global_batch, cfg.seed)
        self.protocol = protocol_of(cfg)

    def next(self):
        return self.protocol.take(self, self.w)

    def read(self, idx, images: bool):
        """(images or None, labels) of the examples idx."""
        return (as_input(self.x[idx]) if images else None), self.y[idx]


class Protocol:
    """What every protocol has: the run's config, its method's Protocol row, its name (model.PREDICT's key)."""
    name = ""

    def __init__(self, cfg: ParallelConfig):
        self.cfg, self.spec = cfg, cfg.spec

    def predict_step_s(self, profiles, cut_s, split, batch, latency_s, allreduce_s=0.0, microbatches=1,
                       workers=None, opt_s=None) -> float:
        """The analytic model's seconds per step (model.py says each protocol's formula)."""
        return model.PREDICT[self.name](self.spec, profiles, cut_s, split, batch, latency_s, allreduce_s,
                                        microbatches, workers, opt_s)


class Staged(Protocol):
    """The net cut into K contiguous stages, one per worker (units: the blocks, then the head; cuts
    balanced by FLOPs unless `split` gives them). Stage 0 reads the images; the labels travel up with
    the activations; the last stage evaluates."""

    def split(self, flops: list[float]) -> list[int]:
        return list(self.cfg.split or model.balanced_split(flops, self.cfg.workers))

    def units(self, rank: int, split: list[int]) -> list[int]:
        return list(model.stage_bounds(split)[rank])

    def part(self, rank: int, split: list[int]) -> str:
        lo, hi = model.stage_bounds(split)[rank]
        return f"units {lo}..{hi - 1}"

    def build_worker(self, rank: int, net, data, device, backend: str, split: list[int]) -> Worker:
        staged = backend == "gloo" and device.type == "cuda"
        lo, hi = model.stage_bounds(split)[rank]
        # what enters each unit, then the logits
        shapes = [tuple(data.input_shape), *net.block_shapes, (net.num_classes,)]
        workers = self.cfg.workers
        return Worker(rank, workers, Stage(net, lo, hi, self.cfg.precision), shapes[lo], shapes[hi],
                      Link(rank - 1, device, staged) if rank > 0 else None,
                      Link(rank + 1, device, staged) if rank < workers - 1 else None, device)

    def take(self, batches: Batches, w: Worker):
        """Stage 0 reads the batch; the others receive it (activation and labels) from below."""
        if w.below is not None:
            batches.stream.next()  # keep the stream in step; the batch arrives from below
            return w.receive_batch(batches.global_batch)
        return batches.read(batches.stream.next().to(w.device), images=True)

    def evaluate(self, w: Worker, test_x, test_y):
        return pipeline_test_error(w, test_x, test_y)

    def measure(self, w: Worker, global_batch: int, device) -> tuple[float | None, float | None]:
        """(link latency, all-reduce seconds) for the analytic model."""
        return link_latency(w, global_batch), None

    def smallest_share(self, batch: int) -> int:
        """The smallest batch a unit sees (profiled beside the batch): the batch itself."""
        return batch


class Locked(Staged):
    """K = 1: single-process backprop; K > 1: the naive locked pipeline."""
    name = "locked"

    def stepper(self, w: Worker, opt, device):
        return (lambda x, y: locked_step(w, opt, x, y)), None


class Decoupled(Staged):
    """Update-unlocked DNI stages: each updates from its SG at once; the late gradient trains the SG."""
    name = "decoupled"

    def stepper(self, w: Worker, opt, device):
        late = LateSG(w.stage, self.cfg.late_sg)
        return (lambda x, y: decoupled_step(w, opt, x, y, late)), late


class Pipelined(Staged):
    """Micro-batched pipeline (torch.distributed.pipelining): GPipe or 1F1B. Every stage draws the batch
    (the last one reads its labels from the data set), stage 0 its images."""
    name = "pipelined"

    def stepper(self, w: Worker, opt, device):
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
        schedule_class = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[self.spec.schedule]
        pstage = PipelineStage(w.stage, w.rank, self.cfg.workers, device)
        schedule = schedule_class(pstage, n_microbatches=self.cfg.microbatches, loss_fn=F.cross_entropy)
        return (lambda x, y: pipelined_step(w, schedule, opt, x, y)), None

    def take(self, batches: Batches, w: Worker):
        return batches.read(batches.stream.next().to(w.device), images=w.below is None)

    def smallest_share(self, batch: int) -> int:
        return batch // self.cfg.microbatches


class DataParallel(Protocol):
    """Every worker holds the whole net (DistributedDataParallel) and trains on its share of the batch."""
    name = "data_parallel"

    def split(self, flops: list[float]) -> list[int]:
        return [len(flops)]

    def units(self, rank: int, split: list[int]) -> list[int]:
        return [0, sum(split)]

    def part(self, rank: int, split: list[int]) -> str:
        return "a replica"

    def build_worker(self, rank: int, net, data, device, backend: str, split: list[int]) -> Worker:
        return Worker(rank, self.cfg.workers, net, tuple(data.input_shape), (net.num_classes,), None, None, device)

    def stepper(self, w: Worker, opt, device):
        ddp = nn.parallel.DistributedDataParallel(w.stage, device_ids=[device.index] if device.type == "cuda" else None)
        return (lambda x, y: data_parallel_step(ddp, opt, x, y, self.cfg.precision)), None

    def take(self, batches: Batches, w: Worker):
        per = batches.global_batch // self.cfg.workers
        idx = batches.stream.next().to(w.device)[w.rank * per:(w.rank + 1) * per]
        return batches.read(idx, images=True)

    def evaluate(self, w: Worker, test_x, test_y):
        return replica_test_error(w, test_x, test_y)

    def measure(self, w: Worker, global_batch: int, device) -> tuple[float | None, float | None]:
        return None, allreduce_time(list(w.stage.parameters()), device, self.cfg.workers)

    def smallest_share(self, batch: int) -> int:
        return max(2, batch // max(self.cfg.workers, 2))


PROTOCOLS = {p.name: p for p in (Locked, Decoupled, Pipelined, DataParallel)}
assert set(PROTOCOLS) == set(model.PREDICT), "every protocol has its class and its prediction"


def protocol_of(cfg: ParallelConfig):
    """The protocol object of the run's method (its Protocol row names it); an unknown one is an error."""
    name = cfg.spec.protocol
    if name not in PROTOCOLS:
        raise unknown_protocol(name)
    return PROTOCOLS[name](cfg)
