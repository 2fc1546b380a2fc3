"""Character-level language modelling ([DNI] Sec. 3.1, the paper's third RNN task): an LSTM reads B
streams of the training text, T characters per update, its state carried across windows, trained by
truncated BPTT, DNI, DNI+Aux or BP(λ) with the RNN family's window trainer (the same SG targets,
injection scale and discount: sgbench.families.rnn.run). Stream b reads the training text from
position b * len / B onward, wrapping around at the end.

Reported in bits per character (cross-entropy / ln 2): the training bpc of each logging interval,
validation bpc (the first `eval_chars` characters of the validation split, one pass with the state
carried, no truncation matters in evaluation) every `eval_every` time steps, and test bpc on the whole
test split at the end. The data set is labelled with its own name (sgbench.corpus).

Checkpoints at every evaluation and resumes bit-exactly; a non-finite loss, or one beyond
runtime.ABSURD_LOSS times chance's, stops the run as diverged.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time

import torch
import torch.nn.functional as F

from ... import runtime
from ...corpus import load_corpus
from ...nets import SequenceNet
from ..rnn.run import RunInterrupted, WindowTrainer, make_optimizer, resume
from .config import NON_RESULT_FIELDS, CharLMConfig

log = logging.getLogger(__name__)
EVAL_STREAMS = 16      # validation / test text is read as this many parallel pieces
EVAL_CHUNK = 256       # characters per forward pass in evaluation
CURVES = ("timestep", "train_bpc", "valid_bpc", "boundary_target_norm", "boundary_sg_norm",
          "boundary_target_cosine", "elapsed_s")


def char_errors(logits, y, mask):
    """Per step and stream [T, B]: cross-entropy of the next character, in nats."""
    t, b, v = logits.shape
    return F.cross_entropy(logits.reshape(t * b, v), y.reshape(t * b), reduction="none").view(t, b) * mask


class TextStreams:
    """B read positions in a text; `window(T)` -> (inputs [T, B], next characters [T, B], mask [T, B])."""

    def __init__(self, ids: torch.Tensor, batch: int):
        self.ids, self.batch = ids, batch
        self.offsets = torch.arange(batch, device=ids.device) * (len(ids) // batch)
        self.position = 0

    def window(self, T: int):
        steps = torch.arange(self.position, self.position + T + 1, device=self.ids.device)
        chars = self.ids[(self.offsets.unsqueeze(0) + steps.unsqueeze(1)) % len(self.ids)]  # [T + 1, B]
        self.position += T
        return chars[:-1], chars[1:], torch.ones(T, self.batch, device=self.ids.device)

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, d):
        self.position = d["position"]


@torch.no_grad()
def evaluate_bpc(model, ids: torch.Tensor, limit: int = 0) -> float:
    """Bits per character on `ids` (the first `limit`, 0: all), read as EVAL_STREAMS contiguous pieces with
    the state carried from the start of each piece."""
    ids = ids[:limit] if limit else ids
    piece = (len(ids) - 1) // EVAL_STREAMS
    if piece < 1:
        raise ValueError(f"evaluation text of {len(ids)} characters is too short for {EVAL_STREAMS} pieces")
    starts = torch.arange(EVAL_STREAMS, device=ids.device) * piece
    state, total = model.initial_state(EVAL_STREAMS, ids.device), 0.0
    for t in range(0, piece, EVAL_CHUNK):
        steps = torch.arange(t, min(t + EVAL_CHUNK, piece) + 1, device=ids.device)
        chars = ids[starts.unsqueeze(0) + steps.unsqueeze(1)]
        logits, _, state = model(chars[:-1], state)
        total += float(char_errors(logits, chars[1:], torch.ones_like(chars[1:], dtype=torch.float)).sum())
    return total / (piece * EVAL_STREAMS) / math.log(2.0)


def train_charlm(config: CharLMConfig, out_dir, *, _stop_after: int | None = None) -> dict:
    """Train one char-LM run; returns the metrics dict also written to out_dir/metrics.json."""
    t_start = time.perf_counter()
    cfg = config.resolved()
    corpus = load_corpus(cfg.corpus, cfg.data_root or None, cfg.download)  # errors before any training
    out_dir, device, meta = runtime.start_run(cfg, out_dir)
    train_ids, valid_ids, test_ids = (corpus.encode(t).to(device) for t in (corpus.train, corpus.valid, corpus.test))
    model = SequenceNet(cfg.embed_dim, corpus.vocab_size, cfg, embed=corpus.vocab_size, family="charlm").to(device)
    opt = make_optimizer(model, cfg)
    trainer = WindowTrainer(model, opt, cfg, device, errors_fn=char_errors)
    streams = TextStreams(train_ids, cfg.batch_size)
    run = {"timestep": 0, "train_time": 0.0, "wall_before": 0.0, "diverged": None, "resumed": False,
           "curves": {k: [] for k in CURVES}}
    ckpt_path = out_dir / "checkpoint.pt"
    stateful = {"model": model, "opt": opt, "streams": streams, "trainer": trainer}
    run["resumed"] = resume(ckpt_path, _result_config(cfg), device, stateful, run)
    log.info("train-charlm %s/%s T=%d seed %d on %s: %d chars train, vocabulary %d, %d time steps x %d streams",
             corpus.name, cfg.method, cfg.T, cfg.seed, device, len(train_ids), corpus.vocab_size, cfg.timesteps,
             cfg.batch_size)
    _train(cfg, trainer, streams, valid_ids, run, ckpt_path, stateful, _stop_after, t_start, device)
    model.eval()
    diverged = run["diverged"] is not None
    final = {"valid_bpc": None if diverged else evaluate_bpc(model, valid_ids),
             "test_bpc": None if diverged else evaluate_bpc(model, test_ids),
             "best_valid_bpc": min((v for v in run["curves"]["valid_bpc"] if v is not None), default=None)}
    metrics = _metrics(cfg, corpus, model, trainer, run, final, meta,
                       run["wall_before"] + time.perf_counter() - t_start)
    runtime.validate(metrics, "charlm_metrics")
    runtime.atomic_write_json(out_dir / "metrics.json", metrics)
    ckpt_path.unlink(missing_ok=True)
    log.info("%s: %s test bpc %s -> %s", metrics["status"], corpus.name, final["test_bpc"], out_dir / "metrics.json")
    return metrics


def _train(cfg, trainer, streams, valid_ids, run, ckpt_path, stateful, stop_after, t_start, device):
    bits_sum, chars, stats_sum, stats_n = 0.0, 0, torch.zeros(3, device=device), torch.zeros(3, device=device)
    next_eval = (run["timestep"] // cfg.eval_every + 1) * cfg.eval_every
    while run["timestep"] < cfg.timesteps:
        t0 = time.perf_counter()
        trainer.model.train()
        x, y, mask = streams.window(cfg.T)
        errors, stats = trainer.step(x, y, mask)
        total = float(errors.sum())
        if runtime.absurd(total, errors.numel() * math.log(trainer.model.head.out_features)):  # nats; chance: uniform
            _diverge(run, run["timestep"] + cfg.T, "or absurd loss")
            return
        bits_sum, chars = bits_sum + total / math.log(2.0), chars + errors.numel()
        ok = torch.isfinite(stats)
        stats_sum[:len(stats)] += torch.where(ok, stats, 0.0)
        stats_n[:len(stats)] += ok
        run["timestep"] += cfg.T
        run["train_time"] += time.perf_counter() - t0
        if run["timestep"] >= next_eval or run["timestep"] >= cfg.timesteps:
            trainer.model.eval()
            valid = evaluate_bpc(trainer.model, valid_ids, cfg.eval_chars)
            if runtime.absurd(valid, math.log2(trainer.model.head.out_features)):  # sane training loss, absurd weights
                _diverge(run, run["timestep"], "or absurd validation bpc")
                return
            c = run["curves"]
            c["timestep"].append(run["timestep"])
            c["train_bpc"].append(bits_sum / chars)
            c["valid_bpc"].append(valid)
            for k, s, n in zip(("boundary_target_norm", "boundary_sg_norm", "boundary_target_cosine"), stats_sum,
                               stats_n):
                c[k].append(float(s / n) if n > 0 else None)
            c["elapsed_s"].append(round(run["train_time"], 3))
            bits_sum, chars = 0.0, 0
            stats_sum.zero_(), stats_n.zero_()
            next_eval += cfg.eval_every
            log.info(runtime.progress_line(run["timestep"], cfg.timesteps, run["train_time"],
                                           f"train bpc {c['train_bpc'][-1]:.3f} valid bpc {c['valid_bpc'][-1]:.3f}"))
            wall = run["wall_before"] + time.perf_counter() - t_start
            runtime.atomic_torch_save(ckpt_path, {"config": _result_config(cfg), "run": {**run, "wall_before": wall},
                                                  **{k: obj.state_dict() for k, obj in stateful.items()}})
            if stop_after is not None and run["timestep"] >= stop_after:
                raise RunInterrupted(f"stopped after time step {run['timestep']} (test hook)")


def _diverge(run: dict, step: int, what: str) -> None:
    """Stop as diverged at `step`, with the last logged (finite) point."""
    c = run["curves"]
    run["diverged"] = {"step": step, "last_finite": {k: c[k][-1] for k in ("train_bpc", "valid_bpc")}
                       if c["timestep"] else {}}
    log.warning("non-finite %s at time step %d: stopping (diverged)", what, step)


def _result_config(cfg) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NON_RESULT_FIELDS}


def _metrics(cfg, corpus, model, trainer, run, final, meta, wall) -> dict:
    metrics = {
        "schema": "sgbench.charlm_metrics/1",
        "status": "diverged" if run["diverged"] else "completed",
        "experiment": "charlm",
        "tier": cfg.tier,
        "config": dataclasses.asdict(cfg),
        "dataset": {"name": corpus.name, "source": corpus.source, "vocab_size": corpus.vocab_size,
                    "chars": {"train": len(corpus.train), "valid": len(corpus.valid), "test": len(corpus.test)},
                    "works": corpus.works},
        "model": {"parameters": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("boundary")),
                  "sg_parameters": sum(p.numel() for p in model.boundary.parameters()) if model.boundary else 0},
        "curves": run["curves"],
        "final": final,
        "timing": {"wall_time_s": round(wall, 3), "train_time_s": round(run["train_time"], 3),
                   "timesteps_per_s": round(run["timestep"] / run["train_time"], 3) if run["train_time"] else None,
                   **trainer.cost(run["timestep"], run["train_time"])},
        "meta": {**meta, "resumed": run["resumed"]},
    }
    if run["diverged"]:
        metrics["diverged"] = run["diverged"]
    return metrics
