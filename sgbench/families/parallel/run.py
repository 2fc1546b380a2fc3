"""The speed question, measured: a feed-forward net trained on K worker processes ([DNI] Sec. 1, 3.3;
issue #15: against data parallelism and a real pipeline schedule).

Workers talk through torch.distributed: gloo on CPU, NCCL when every worker has a GPU of its own
(with fewer GPUs than workers, gloo, messages staged through CPU). How the K workers share the work is
the method's protocol (protocols.py: locked, pipelined, data parallel, decoupled, one class each);
what a worker is made of is stages.py; the unit timings of the analytic model are profile.py's. This
module starts the workers (each one's loop is worker.py's) and assembles metrics.json.

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
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ... import runtime
from ..feedforward.run import build_net, load_run_data
from .config import ParallelConfig, ParallelRunError
from .profile import profile_batches, profile_units
from .protocols import protocol_of
from .stages import unit_flops
from .worker import train_worker, worker_device

log = logging.getLogger(__name__)
STARTED = ".started"                     # marker: an attempt of this run began in this folder


# ---------------------------------------------------------------- one spawned worker process
def run_worker(rank: int, cfg: ParallelConfig, out_dir: str, port: int, split: list[int]) -> None:
    """Entry point of worker `rank` (spawned): train its part, write its share of the results."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {rank} %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(cfg.threads)
    device, backend = worker_device(cfg, rank, cfg.workers)  # spawned: all K on this machine
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=cfg.workers, timeout=timedelta(seconds=cfg.peer_timeout_s))
    part = protocol_of(cfg).part(rank, split)
    log.info("pid %d, %s of %d, %s on %s", os.getpid(), part, sum(split), backend, device)
    try:
        result = train_worker(rank, cfg, device, backend, split, out_dir)
        runtime.atomic_write_json(Path(out_dir) / f".worker{rank}.json", result)
    finally:
        dist.destroy_process_group()


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
    setup = prepare(cfg, out_dir, "spawn")
    spawn_workers(cfg, setup.out_dir, setup.split)
    results = []
    for k in range(cfg.workers):
        path = setup.out_dir / f".worker{k}.json"
        results.append(json.loads(path.read_text()))
        path.unlink()
    return finish(cfg, setup, results, t_start)


@dataclasses.dataclass
class Setup:
    """What the process that writes the results (the spawning parent; rank 0 under torchrun) knows
    before the workers train."""
    out_dir: Path
    meta: dict
    data: object
    sizes: tuple[int, int]       # (n_train, n_test)
    net: torch.nn.Module         # the parent's copy, as every worker builds it
    flops: list
    split: list[int]
    profile: tuple               # (profiles by batch, cut seconds, optimizer seconds)


def prepare(cfg: ParallelConfig, out_dir, launcher: str) -> Setup:
    """The run folder, the data (a data error leaves no file), the split and the profile of the units."""
    out_dir, device, meta = runtime.start_run(cfg, out_dir)
    data, (train_x, _), (_, test_y) = load_run_data(cfg, torch.device("cpu"))
    restarted = begin_attempt(out_dir)
    meta = meta | {"restarted": restarted, "resumed": False, "launcher": launcher}
    if device.type == "cuda" and launcher == "spawn" and torch.cuda.device_count() < cfg.workers:
        log.warning("%d workers share %d GPU(s): gloo, messages staged through CPU; timings are not those of "
                    "one GPU per worker", cfg.workers, torch.cuda.device_count())
    net = build_net(cfg.net_config(), data)  # as every worker builds it
    flops = unit_flops(net, data.input_shape)
    split = protocol_of(cfg).split(flops)
    net = net.to(device)
    profiles, cut_s, opt_s = {}, [], []
    for batch in profile_batches(cfg, len(train_x)):
        profiles[batch], cut_s, opt_s = profile_units(cfg, net, data, device, batch)
    log.info("train-parallel %s/%s-%d/%s seed %d: %d workers, %s, %d iterations", data.name, cfg.arch, cfg.layers,
             cfg.method, cfg.seed, cfg.workers, f"units per worker {split}" if cfg.spec.staged
             else "a replica each", cfg.iterations)
    return Setup(out_dir, meta, data, (len(train_x), len(test_y)), net, flops, split, (profiles, cut_s, opt_s))


def finish(cfg: ParallelConfig, setup: Setup, results: list[dict], t_start: float) -> dict:
    """metrics.json from the workers' results (in rank order)."""
    metrics = assemble_metrics(cfg, setup.data, setup.sizes, setup.net, setup.flops, setup.split, setup.profile,
                               results, setup.meta)
    metrics["timing"]["wall_time_s"] = round(time.perf_counter() - t_start, 3)
    runtime.validate(metrics, "parallel_metrics")
    runtime.atomic_write_json(setup.out_dir / "metrics.json", metrics)
    (setup.out_dir / STARTED).unlink(missing_ok=True)
    t = metrics["timing"]
    log.info("done (%s): test error %s, %.0f samples/s -> %s", metrics["status"], metrics["final"]["test_error"],
             t["samples_per_s"], setup.out_dir / "metrics.json")
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
        part = protocol_of(cfg).part(e.error_index, split)
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
        step, seconds = runtime.time_to_target(curves["step"], curves["test_error"], curves["elapsed_s"], target)
        out.append({"target_error": target, "seconds": _finite(seconds), "step": None if math.isinf(step) else int(step)})
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
            "predicted_step_s": protocol_of(cfg).predict_step_s(profiles, cut_s, split, batch, latency, allreduce,
                                                                cfg.microbatches, cfg.workers, opt_s),
        },
        "meta": meta,
    }
    if diverged:
        metrics["diverged"] = diverged
    return metrics
