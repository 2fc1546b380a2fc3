"""The one training loop of every runner (issue #22): steps, the evaluation schedule, progress lines
with an ETA, checkpoint and resume, divergence, and metrics.json with its header and metadata.

A family gives the loop its hooks (`Hooks`): the step (which trains one update, moves the run's counter
on and may report divergence), the untimed work after a step (probes), when an evaluation is due, the
evaluation (which appends a point to the curves and may report divergence too) and the progress line's
detail. Everything a run resumes from lives in two places: `run` (a dict: the counter, train time,
wall time of earlier attempts, curves, ...) and the `stateful` objects (model, optimizer, streams,
...), both saved in one checkpoint. Torch is imported only where a checkpoint is read or written."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from . import runtime

log = logging.getLogger(__name__)
# A checkpoint's form; one of another form (an older sgbench) is not resumed but started afresh.
CHECKPOINT_FORM = 2


class RunInterrupted(RuntimeError):
    """Raised by the `_stop_after` test hook after that point's checkpoint, standing in for a killed process."""


def result_config(cfg, non_result: tuple | frozenset) -> dict:
    """The config fields that set a number: what a checkpoint must match to be resumed."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in non_result}


def new_run(counter: str, curves) -> dict:
    """A run's progress before its first step: `counter` ("step" or "timestep") is how far it is."""
    return {counter: 0, "train_time": 0.0, "wall_before": 0.0, "diverged": None, "resumed": False, "curves": curves}


class Hooks:
    """What a family gives the loop. `step` and `evaluate` return a diverged record (runtime.diverged_record
    or the family's own) to stop the run, else None."""

    def step(self, run: dict) -> dict | None:
        raise NotImplementedError

    def after_step(self, run: dict) -> None:
        """Untimed work after each step (the fidelity probes)."""

    def eval_due(self, done: int) -> bool:
        raise NotImplementedError

    def evaluate(self, run: dict) -> dict | None:
        raise NotImplementedError

    def detail(self, curves) -> str | None:
        """The progress line's detail (None: no progress lines from this process)."""
        return ""


class Checkpoint:
    """A run's checkpoint file: `identity` (its result config, a seed group's seeds) must match for a
    resume; it holds the run's progress and every stateful object's state."""

    def __init__(self, path, identity: dict, stateful: dict, device, counter: str, t_start: float,
                 as_recorded=None):
        self.path, self.identity, self.stateful, self.device = Path(path), identity, stateful, device
        self.counter, self.t_start = counter, t_start
        self.as_recorded = as_recorded  # the config's RunConfig.as_recorded: an older checkpoint's config read as now

    def resume(self, run: dict) -> bool:
        """Load the run's progress and each stateful object from a checkpoint of the same run, if any;
        whether it did (run["resumed"])."""
        expected = self.identity | {"form": CHECKPOINT_FORM}
        ckpt = runtime.load_checkpoint(self.path, self.device, expected, log.warning, self.as_recorded)
        if ckpt is not None:
            runtime.restore(ckpt, self.stateful)
            run.update(ckpt["run"])
            log.info("resuming from %s at %s %d", self.path, self.counter, run[self.counter])
        run["resumed"] = ckpt is not None
        return run["resumed"]

    def wall(self, run: dict) -> float:
        """Wall time of every attempt so far (the earlier ones up to their last checkpoint)."""
        return run["wall_before"] + time.perf_counter() - self.t_start

    def save(self, run: dict) -> None:
        runtime.atomic_torch_save(self.path, self.identity | {
            "form": CHECKPOINT_FORM, "step": run[self.counter], "run": run | {"wall_before": self.wall(run)},
            **{name: obj.state_dict() for name, obj in self.stateful.items()}})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def train(hooks: Hooks, run: dict, ckpt: Checkpoint, total: int, *, checkpoint_every_s: float = 0.0,
          log_at_eval: bool = True, log_every_s: float = 60.0, stop_after: int | None = None,
          precision: str = "fp32") -> None:
    """Train until run[counter] reaches `total` or a hook reports divergence (run["diverged"]).

    At each due evaluation (and at the last step): the evaluation, a progress line (`log_at_eval`),
    and a checkpoint once `checkpoint_every_s` seconds have passed since the last one (0: at every
    evaluation) and always at the last; between them a progress line every `log_every_s` seconds.
    `stop_after` (tests only): raise RunInterrupted after the checkpoint of the first evaluation at
    or beyond that point, as a kill would stop the run. `precision` tf32 turns TF32 matmuls on for the
    loop's duration (bf16 autocast is the step hooks' own: runtime.autocast around their forward)."""
    with runtime.matmul_precision(precision):
        _train(hooks, run, ckpt, total, checkpoint_every_s, log_at_eval, log_every_s, stop_after)


def _train(hooks, run, ckpt, total, checkpoint_every_s, log_at_eval, log_every_s, stop_after) -> None:
    counter = ckpt.counter
    last_print = last_save = time.perf_counter()
    while run[counter] < total:
        t0 = time.perf_counter()
        diverged = hooks.step(run)
        run["train_time"] += time.perf_counter() - t0
        if diverged is None:
            hooks.after_step(run)
            done, last = run[counter], run[counter] >= total
            if hooks.eval_due(done) or last:
                diverged = hooks.evaluate(run)
        if diverged is not None:
            run["diverged"] = diverged
            log.warning("non-finite or absurd loss at %s %d: stopping (status diverged)", counter, diverged["step"])
            return
        if hooks.eval_due(done) or last:
            stop = stop_after is not None and done >= stop_after
            if log_at_eval:
                _progress(hooks, run, counter, total)
                last_print = time.perf_counter()
            # a checkpoint costs a save and an fsync: at an evaluation once checkpoint_every_s have passed
            # since the last one, and at the last (what the final measurements start from)
            if time.perf_counter() - last_save >= checkpoint_every_s or last or stop:
                ckpt.save(run)
                last_save = time.perf_counter()
            if stop:
                raise RunInterrupted(f"stopped after {counter} {done} (test hook)")
        if time.perf_counter() - last_print > log_every_s or (last and not log_at_eval):
            _progress(hooks, run, counter, total)
            last_print = time.perf_counter()


def _progress(hooks: Hooks, run: dict, counter: str, total: int) -> None:
    detail = hooks.detail(run["curves"])
    if detail is not None:  # None: this process prints none (a parallel worker that keeps no curves)
        log.info(runtime.progress_line(run[counter], total, run["train_time"], detail))


def rate(done: int, seconds: float) -> float | None:
    """Units per second of training time (None before any)."""
    return round(done / seconds, 3) if seconds > 0 else None


def write_metrics(out_dir, schema: str, experiment: str, cfg, body: dict, *, diverged: dict | None, meta: dict,
                  wall: float, train_time: float) -> dict:
    """metrics.json: the header (schema, status, experiment, tier, config), the family's `body` (data set,
    model, curves, final, its own timing entries under "timing"), the timing's wall and train time,
    the metadata and the diverged record; non-finite values as null, schema-checked, written atomically."""
    metrics = {"schema": f"sgbench.{schema}/1", "status": "diverged" if diverged else "completed",
               "experiment": experiment, "tier": cfg.tier, "config": dataclasses.asdict(cfg), **body}
    metrics["timing"] = {"wall_time_s": round(wall, 3), "train_time_s": round(train_time, 3),
                         **body.get("timing", {})}
    metrics["meta"] = meta
    if diverged:
        metrics["diverged"] = diverged
    metrics = runtime.json_safe(metrics)
    runtime.validate(metrics, schema)
    runtime.atomic_write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics
