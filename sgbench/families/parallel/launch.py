"""The run's K workers started by torchrun instead of by run.py's spawn, so they can span machines
(docs/cluster.md: SLURM, one srun task per node, torchrun in each). Every process is one worker: it
reads its place from torchrun's environment (runtime.launch_env), joins the others through
MASTER_ADDR:MASTER_PORT (gloo on CPU, NCCL with one GPU per worker: GPU LOCAL_RANK) and runs the same
worker loop as a spawned worker, so a seed gives the same metrics either way.

Rank 0 is the run's parent as well: it holds the run folder (its lock, the finished-run check), profiles
the units, gathers the others' results through the process group and writes metrics.json. The other
ranks write nothing (save_params: their own params-<rank>.pt in their --out), so the run folder needs no
shared file system. Every rank reads the data itself (each node needs it under its data root).
Like a spawned run, a launched run is never resumed: rerun, it restarts from scratch.
"""
from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from ...runtime import Launch, RunError
from ..feedforward.run import load_run_data
from .config import ParallelConfig, ParallelRunError
from .run import finish, prepare
from .worker import train_worker, worker_device

log = logging.getLogger(__name__)


def check_launch(cfg: ParallelConfig, launch: Launch) -> None:
    """One process per worker: WORLD_SIZE must be the run's K (refused on every rank, before any rendezvous)."""
    if launch.world_size != cfg.workers:
        raise ValueError(f"torchrun started {launch.world_size} processes (WORLD_SIZE) for a run of workers "
                         f"{cfg.workers}: each process is one worker; launch nnodes x nproc-per-node = {cfg.workers} "
                         f"processes, or set --workers {launch.world_size}")


def train_launched(config: ParallelConfig, out_dir, launch: Launch, claim) -> dict | None:
    """This process's worker of a run torchrun launched. Returns the metrics on rank 0 (None when the
    folder already held the finished run: every rank then stops), None on the other ranks."""
    t_start = time.perf_counter()
    cfg = config.resolved()
    check_launch(cfg, launch)
    torch.set_num_threads(cfg.threads)
    device, backend = worker_device(cfg, launch.local_rank, launch.local_world_size)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Rank 0 locks the folder before it joins; the others wait for it in the rendezvous.
    with contextlib.ExitStack() as held:
        verdict = False  # rank 0's word: False train, True finished there, text: why the run is refused
        if launch.rank == 0:
            try:
                verdict = held.enter_context(claim()) is not None
            except ValueError as e:  # e.g. a finished run of another config there: every rank says so
                verdict = str(e)
        dist.init_process_group(backend, init_method="env://", rank=launch.rank, world_size=launch.world_size,
                                timeout=timedelta(seconds=cfg.peer_timeout_s))
        try:
            return _run(cfg, out_dir, launch, device, backend, verdict, t_start)
        finally:
            dist.destroy_process_group()


def _run(cfg, out_dir, launch: Launch, device, backend: str, verdict, t_start: float) -> dict | None:
    rank = launch.rank
    verdict = _from_rank0(verdict, rank)
    if isinstance(verdict, str):
        raise ValueError(verdict if rank == 0 else f"rank 0 refused the run, no worker trained: {verdict}")
    if verdict:
        if rank:
            log.info("rank 0 found this run finished in its --out; nothing to train")
        return None
    # Every rank reads its data before anything trains, so a missing file is one error on every rank.
    problems = [None] * launch.world_size
    dist.all_gather_object(problems, _data_problem(cfg))
    bad = next(((r, p) for r, p in enumerate(problems) if p), None)
    if bad:
        raise RunError(f"rank {bad[0]} of {launch.world_size} cannot read its data, no worker trained: {bad[1]}")
    setup = None
    if rank == 0:
        try:
            setup = prepare(cfg, out_dir, "torchrun")
        except Exception as e:  # the peers wait for the split: tell them, then fail here
            _from_rank0(str(e) or type(e).__name__, rank)
            raise
        split = _from_rank0(setup.split, rank)
    else:
        split = _from_rank0(None, rank)
        if isinstance(split, str):
            raise RunError(f"rank 0 could not set up the run, no worker trained: {split}")
        log.info("rank %d of %d (local %d), %s on %s", rank, launch.world_size, launch.local_rank, backend, device)
    try:
        result = train_worker(rank, cfg, device, backend, split, str(out_dir))
    except RuntimeError as e:  # a peer failed or was stopped: its connection closed under this one
        raise ParallelRunError(f"worker {rank} of {cfg.workers} stopped: {str(e).strip().splitlines()[-1]} "
                               "(a failed or stopped peer ends the run; see every rank's log)") from e
    results = [None] * launch.world_size if rank == 0 else None
    dist.gather_object(result, results, dst=0)
    return finish(cfg, setup, results, t_start) if rank == 0 else None


def _from_rank0(value, rank: int):
    """Rank 0's `value`, on every rank."""
    box = [value if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _data_problem(cfg: ParallelConfig) -> str | None:
    try:
        load_run_data(cfg, torch.device("cpu"))
    except (ValueError, OSError, RunError) as e:
        return str(e)
    return None
