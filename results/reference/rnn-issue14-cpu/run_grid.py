"""Evidence grid for issue #14 (run with nice -n 10, 1 thread): copy / repeat copy at T = 2..5, 2 seeds,
BPTT / DNI / DNI+Aux / BP(λ); then char-LM at T = 4, 8. Writes one folder per run; skips finished ones."""
import json
import logging
import sys
import time
from pathlib import Path

from sgbench.families.charlm.config import CharLMConfig
from sgbench.families.charlm.run import train_charlm
from sgbench.families.rnn.config import RNNConfig
from sgbench.families.rnn.run import train_rnn

OUT = Path(sys.argv[1])  # one folder per run under it
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 15000
logging.basicConfig(level=logging.WARNING)
METHODS = ("bptt", "dni", "dni_aux", "dni_bpl")
jobs = []
for task in ("copy", "repeat_copy"):
    for seed in (0, 1):
        for T in (2, 3, 4, 5):
            for method in METHODS:
                jobs.append(("rnn", dict(task=task, method=method, T=T, seed=seed, timesteps=STEPS, hidden_size=64,
                                         batch_size=16, bpl_horizon=3, probe_every=0 if method == "bptt" else STEPS // 5, probe_horizon=6,
                                         log_points=20, device="cpu", threads=1),
                             f"{task}-T{T}-{method}-seed{seed}"))
for T in (4, 8):
    for method in METHODS:
        jobs.append(("charlm", dict(method=method, T=T, seed=0, timesteps=STEPS, hidden_size=128, batch_size=32,
                                    bpl_horizon=3, eval_every=STEPS // 5, eval_chars=50_000, device="cpu", threads=1),
                     f"charlm-T{T}-{method}-seed0"))
for kind, kw, name in jobs:
    out = OUT / name
    if (out / "metrics.json").exists():
        continue
    t0 = time.time()
    m = (train_rnn(RNNConfig(**kw), out) if kind == "rnn" else train_charlm(CharLMConfig(**kw), out))
    f = m["final"]
    print(name, m["status"], json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in f.items()}),
          f"{time.time() - t0:.0f}s", flush=True)
