"""Speed of the RNN runner: windows per second and time steps per second per stream, by method, LSTM
size, number of streams and window length T; the activation memory of one window's update (what
truncated BPTT must hold, A1 of the question); and what episode generation alone costs per window.

    python benchmarks/rnn_speed.py                      # bptt, dni; hidden 64, 256; 16 / 64 / 256 streams
    python benchmarks/rnn_speed.py --methods bptt --hidden 256 --streams 64 --T 2,8,32,128,512   # A1
    python benchmarks/rnn_speed.py --device cuda --windows 400
    python benchmarks/rnn_speed.py --against 0e3aa4e --methods bptt,dni --hidden 64 --streams 16 --T 4 --rounds 3
                                                        # the runner at a revision vs the working tree

Each cell runs the runner's own pieces (sgbench.tasks.EpisodeStream, the family's WindowTrainer) on
copy at a fixed level, T steps per window, after a warm-up. A benchmark that prints a table, not a
test: nothing here asserts a speed.

`--against REV` times the whole training loop instead (sgbench.loop._train; before issue #22
sgbench.families.rnn.run._train: windows, updates, curriculum, logging, checkpoints; not the set-up
or the final signal measurement) of the
code at git revision REV (checked out once with `git worktree add` under /tmp) and of the working
tree, each in its own process on one thread, in alternating rounds (base, new, base, new, ...) so
that a change in the machine's load falls on both; it prints the medians of steps per second of
wall time and per second of the process's CPU time (steadier on a shared machine, where a run
waits for a core), their ratios, and each round's wall-time rate.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from sgbench.families.rnn.config import RNNConfig
from sgbench.families.rnn.run import WindowTrainer, make_optimizer
from sgbench.nets import SequenceNet
from sgbench.runtime import resolve_device, run_metadata
from sgbench.tasks import EpisodeStream, Task, bits


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method, hidden, streams, T, level, windows, device, precision="fp32"):
    """(windows/s of the whole update, ms per window of episode generation alone, the update's
    activation memory in MiB: sgbench.runtime.step_memory, measured by the trainer's first window)."""
    task = Task("copy")
    cfg = RNNConfig(method=method, hidden_size=hidden, batch_size=streams, T=T, precision=precision).resolved()
    torch.manual_seed(0)
    model = SequenceNet(task.in_dim, task.out_dim, cfg).to(device)
    trainer = WindowTrainer(model, make_optimizer(model, cfg), cfg, device)
    stream = EpisodeStream(task, streams, 0, device, start_level=level)

    def one():
        x, y, mask = stream.window(T, level)
        errors, _ = trainer.step(x, y, mask)
        stream.finish_window(bits(errors))

    for _ in range(max(3, windows // 10)):
        one()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(windows):
        one()
    sync(device)
    rate = windows / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(windows):
        _, _, mask = stream.window(T, level)
        stream.finish_window(mask)
    sync(device)
    return rate, 1e3 * (time.perf_counter() - t0) / windows, trainer.memory["activation_memory_mb"]


ROOT = Path(__file__).resolve().parent.parent
# The child of --against: train one run with the code on PYTHONPATH and print the training loop's
# steps/s. It uses only train_rnn, RNNConfig and the loop's _train: run._train up to the shared loop
# (issue #22), sgbench.loop._train (run.loop) since.
CHILD = """
import json, sys, time, torch
import sgbench.families.rnn.run as run
from sgbench.families.rnn.config import RNNConfig
torch.set_num_threads(1)
owner = run if hasattr(run, "_train") else run.loop
spent, original = [0.0, 0.0], owner._train
def timed(*args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        return original(*args, **kwargs)
    finally:
        spent[0] += time.perf_counter() - t0
        spent[1] += time.process_time() - c0
owner._train = timed
cfg = RNNConfig(**json.loads(sys.argv[1]))
metrics = run.train_rnn(cfg, sys.argv[2])
print(json.dumps({"steps_per_s": cfg.timesteps / spent[0], "steps_per_cpu_s": cfg.timesteps / spent[1],
                  "length": metrics["final"]["largest_length_solved"], "sgbench": [run.__file__, owner.__file__]}))
"""


def base_checkout(rev: str) -> Path:
    """A checkout of `rev` under /tmp (made once; reused while it is at the same commit)."""
    commit = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    path = Path(f"/tmp/sgbench-base-{commit[:12]}")
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True,
                       capture_output=True)
    return path


def time_child(root: Path, cfg: dict, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg), str(out)], env=env, cwd=root, check=True,
                          capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(f.startswith(str(root)) for f in result["sgbench"]), f"the child imported {result['sgbench']}, " \
        f"not {root}"
    return result


def compare(args):
    """Steps/s of the training loop at `args.against` and in the working tree, alternating."""
    import tempfile
    base = base_checkout(args.against)
    print(f"# {args.against} ({base}) vs the working tree ({ROOT}); copy, {args.timesteps} time steps, "
          f"one thread, {args.rounds} alternating rounds; load {os.getloadavg()[0]:.2f}")
    print(f"{'method':8} {'hidden':>6} {'streams':>7} {'T':>4} {'base steps/s':>13} {'new steps/s':>12} "
          f"{'ratio':>6} {'base /cpu-s':>12} {'new /cpu-s':>11} {'ratio':>6}  rounds (base/new)  lengths (base/new)")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for hidden in map(int, args.hidden.split(",")):
                for streams in map(int, args.streams.split(",")):
                    for T in map(int, args.T.split(",")):
                        cfg = {"method": method, "hidden_size": hidden, "batch_size": streams, "T": T,
                               "timesteps": args.timesteps, "device": "cpu", "threads": 1, "tier": "custom"}
                        # the working tree trains the SG at the network's rate, as revisions before
                        # issue #24 did (one Adam), so that both sides compute the same run
                        same = {"base": cfg, "new": {**cfg, "sg_lr": 1e-3}}
                        runs = {"base": [], "new": []}
                        for r in range(args.rounds):
                            for name, root in (("base", base), ("new", ROOT)):
                                runs[name].append(time_child(root, same[name], Path(tmp) / f"{name}-{method}-{r}"))
                        b, n, bc, nc = (statistics.median(x[key] for x in runs[k]) for key in
                                        ("steps_per_s", "steps_per_cpu_s") for k in ("base", "new"))
                        rounds = " ".join(f"{x['steps_per_s']:.0f}/{y['steps_per_s']:.0f}"
                                          for x, y in zip(runs["base"], runs["new"]))
                        lengths = f"{runs['base'][0]['length']}/{runs['new'][0]['length']}"
                        print(f"{method:8} {hidden:6d} {streams:7d} {T:4d} {b:13.0f} {n:12.0f} {n / b:6.2f} "
                              f"{bc:12.0f} {nc:11.0f} {nc / bc:6.2f}  {rounds}  {lengths}", flush=True)
    print(f"# load after: {os.getloadavg()[0]:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="bptt,dni")
    ap.add_argument("--hidden", default="64,256")
    ap.add_argument("--streams", default="16,64,256")
    ap.add_argument("--T", default="4", help="window lengths, comma-separated")
    ap.add_argument("--level", type=int, default=8, help="copy level (episode lengths drawn from 1..level)")
    ap.add_argument("--windows", type=int, default=100, help="timed windows per cell")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32", help="fp32, bf16 or tf32 (CUDA) for the window's update")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--against", metavar="REV", help="time the training loop at git revision REV and in the "
                    "working tree, back to back (one thread each)")
    ap.add_argument("--timesteps", type=int, default=30_000, help="--against: time steps per run")
    ap.add_argument("--rounds", type=int, default=3, help="--against: alternating rounds per cell")
    args = ap.parse_args()
    if args.against:
        return compare(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    meta = run_metadata(device)
    hw = meta["hardware"].get("gpu") or meta["hardware"]["cpu"]
    print(f"# {hw} | torch {meta['torch']} | {device} | threads {torch.get_num_threads()} | "
          f"copy, level {args.level}, {args.windows} windows per cell")
    print(f"{'method':8} {'hidden':>6} {'streams':>7} {'T':>4} {'windows/s':>10} {'ms/window':>10} "
          f"{'steps/s/stream':>15} {'stream-steps/s':>15} {'act. MiB':>9} {'gen ms/window':>14}")
    for method in args.methods.split(","):
        for hidden in map(int, args.hidden.split(",")):
            for streams in map(int, args.streams.split(",")):
                for T in map(int, args.T.split(",")):
                    rate, gen_ms, mib = measure(method, hidden, streams, T, args.level, args.windows, device,
                                                args.precision)
                    print(f"{method:8} {hidden:6d} {streams:7d} {T:4d} {rate:10.1f} {1e3 / rate:10.2f} "
                          f"{rate * T:15.1f} {rate * T * streams:15.0f} {mib:9.2f} {gen_ms:14.3f}", flush=True)


if __name__ == "__main__":
    main()
