"""Profiling for the analytic model (model.py): each unit's training step timed alone, at the batch
sizes the run's protocol uses, on the parent process's copy of the net before the workers start."""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from ... import optim
from ...data import as_input
from .config import ParallelConfig
from .protocols import LateSG, protocol_of
from .stages import Stage, sync

PROFILE_STEPS = 20                       # timed repetitions of each unit, for the analytic model


def profile_batches(cfg: ParallelConfig, n_train: int) -> list[int]:
    """Batch sizes at which every unit is timed: the batch, and the smallest share a method of the
    run uses (a micro-batch, a data-parallel share). Between them the model interpolates linearly."""
    batch = min(cfg.batch_size, n_train)
    return sorted({batch, protocol_of(cfg).smallest_share(batch)})


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
        opt = optim.Adam([p for p in stage.parameters() if p.requires_grad], lr=cfg.lr)

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
        sync(device)
        t0 = time.perf_counter()
        inner = fn()
        sync(device)
        if i >= warmup:
            times.append(inner if timed_inside else time.perf_counter() - t0)
    return statistics.median(times)
