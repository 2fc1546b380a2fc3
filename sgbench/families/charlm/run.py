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

import logging
import math
import time

import torch
import torch.nn.functional as F

from ... import loop, runtime
from ...corpus import load_corpus
from ...nets import SequenceNet
from ..rnn.run import WindowTrainer, crossed, flat_adam, make_optimizer, sequence_model_size
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
    run = loop.new_run("timestep", {k: [] for k in CURVES})
    stateful = {"model": model, "opt": opt, "streams": streams, "trainer": trainer}
    ckpt = loop.Checkpoint(out_dir / "checkpoint.pt", {"config": loop.result_config(cfg, NON_RESULT_FIELDS),
                                                       "flat_adam": flat_adam(model)}, stateful, device, "timestep",
                           t_start, as_recorded=cfg.as_recorded)
    ckpt.resume(run)
    log.info("train-charlm %s/%s T=%d seed %d on %s: %d chars train, vocabulary %d, %d time steps x %d streams",
             corpus.name, cfg.method, cfg.T, cfg.seed, device, len(train_ids), corpus.vocab_size, cfg.timesteps,
             cfg.batch_size)
    loop.train(TextRun(cfg, trainer, streams, valid_ids, device), run, ckpt, cfg.timesteps, stop_after=_stop_after,
               precision=cfg.precision)
    model.eval()
    diverged = run["diverged"] is not None
    final = {"valid_bpc": None if diverged else evaluate_bpc(model, valid_ids),
             "test_bpc": None if diverged else evaluate_bpc(model, test_ids),
             "best_valid_bpc": min((v for v in run["curves"]["valid_bpc"] if v is not None), default=None)}
    body = {"dataset": {"name": corpus.name, "source": corpus.source, "vocab_size": corpus.vocab_size,
                        "chars": {"train": len(corpus.train), "valid": len(corpus.valid), "test": len(corpus.test)},
                        "works": corpus.works},
            "model": sequence_model_size(model), "curves": run["curves"], "final": final,
            "timing": {"timesteps_per_s": loop.rate(run["timestep"], run["train_time"]),
                       **trainer.cost(run["timestep"], run["train_time"])}}
    metrics = loop.write_metrics(out_dir, "charlm_metrics", "charlm", cfg, body, diverged=run["diverged"],
                                 meta={**meta, "resumed": run["resumed"]}, wall=ckpt.wall(run),
                                 train_time=run["train_time"])
    ckpt.remove()
    log.info("%s: %s test bpc %s -> %s", metrics["status"], corpus.name, final["test_bpc"], out_dir / "metrics.json")
    return metrics


class TextRun(loop.Hooks):
    """The char-LM window step (divergence against a uniform guess), and validation bpc every eval_every
    time steps (an absurd one is divergence too: a sane training loss with absurd weights)."""

    def __init__(self, cfg, trainer, streams, valid_ids, device):
        self.cfg, self.trainer, self.streams, self.valid_ids = cfg, trainer, streams, valid_ids
        self.bits_sum, self.chars = 0.0, 0
        self.stats_sum, self.stats_n = torch.zeros(3, device=device), torch.zeros(3, device=device)

    def step(self, run: dict) -> dict | None:
        cfg, model = self.cfg, self.trainer.model
        model.train()
        x, y, mask = self.streams.window(cfg.T)
        errors, stats = self.trainer.step(x, y, mask)
        total = float(errors.sum())
        if runtime.absurd(total, errors.numel() * math.log(model.head.out_features)):  # nats; chance: uniform
            return _diverged(run, run["timestep"] + cfg.T)
        self.bits_sum, self.chars = self.bits_sum + total / math.log(2.0), self.chars + errors.numel()
        ok = torch.isfinite(stats)
        self.stats_sum[:len(stats)] += torch.where(ok, stats, 0.0)
        self.stats_n[:len(stats)] += ok
        run["timestep"] += cfg.T
        return None

    def eval_due(self, done: int) -> bool:
        return crossed(done, self.cfg.T, self.cfg.eval_every)

    def evaluate(self, run: dict) -> dict | None:
        model = self.trainer.model
        model.eval()
        valid = evaluate_bpc(model, self.valid_ids, self.cfg.eval_chars)
        if runtime.absurd(valid, math.log2(model.head.out_features)):  # sane training loss, absurd weights
            return _diverged(run, run["timestep"])
        c = run["curves"]
        c["timestep"].append(run["timestep"])
        c["train_bpc"].append(self.bits_sum / self.chars)
        c["valid_bpc"].append(valid)
        for k, s, n in zip(("boundary_target_norm", "boundary_sg_norm", "boundary_target_cosine"), self.stats_sum,
                           self.stats_n):
            c[k].append(float(s / n) if n > 0 else None)
        c["elapsed_s"].append(round(run["train_time"], 3))
        self.bits_sum, self.chars = 0.0, 0
        self.stats_sum.zero_(), self.stats_n.zero_()
        return None

    def detail(self, curves: dict) -> str:
        return f"train bpc {curves['train_bpc'][-1]:.3f} valid bpc {curves['valid_bpc'][-1]:.3f}" \
            if curves["timestep"] else ""


def _diverged(run: dict, step: int) -> dict:
    """The diverged record at `step`, with the last logged (finite) point."""
    c = run["curves"]
    return runtime.diverged_record(step, {k: c[k][-1] for k in ("train_bpc", "valid_bpc")} if c["timestep"] else {})
