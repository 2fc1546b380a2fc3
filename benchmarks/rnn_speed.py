"""Speed of the RNN runner: windows per second and time steps per second per stream, by method, LSTM
size, number of streams and window length T; the activation memory of one window's update (what
truncated BPTT must hold, A1 of the question); and what episode generation alone costs per window.

    python benchmarks/rnn_speed.py                      # bptt, dni; hidden 64, 256; 16 / 64 / 256 streams
    python benchmarks/rnn_speed.py --methods bptt --hidden 256 --streams 64 --T 2,8,32,128,512   # A1
    python benchmarks/rnn_speed.py --device cuda --windows 400

Each cell runs the runner's own pieces (sgbench.tasks.EpisodeStream, the family's WindowTrainer) on
copy at a fixed level, T steps per window, after a warm-up. A benchmark that prints a table, not a
test: nothing here asserts a speed.
"""
import argparse
import time

import torch

from sgbench.families.rnn.config import RNNConfig
from sgbench.families.rnn.run import WindowTrainer
from sgbench.nets import SequenceNet
from sgbench.runtime import resolve_device, run_metadata
from sgbench.tasks import EpisodeStream, Task, bits


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method, hidden, streams, T, level, windows, device):
    """(windows/s of the whole update, ms per window of episode generation alone, the update's
    activation memory in MiB: sgbench.runtime.step_memory, measured by the trainer's first window)."""
    task = Task("copy")
    cfg = RNNConfig(method=method, hidden_size=hidden, batch_size=streams, T=T).resolved()
    torch.manual_seed(0)
    model = SequenceNet(task.in_dim, task.out_dim, cfg).to(device)
    trainer = WindowTrainer(model, torch.optim.Adam(model.parameters(), lr=1e-3), cfg, device)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="bptt,dni")
    ap.add_argument("--hidden", default="64,256")
    ap.add_argument("--streams", default="16,64,256")
    ap.add_argument("--T", default="4", help="window lengths, comma-separated")
    ap.add_argument("--level", type=int, default=8, help="copy level (episode lengths drawn from 1..level)")
    ap.add_argument("--windows", type=int, default=100, help="timed windows per cell")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
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
                    rate, gen_ms, mib = measure(method, hidden, streams, T, args.level, args.windows, device)
                    print(f"{method:8} {hidden:6d} {streams:7d} {T:4d} {rate:10.1f} {1e3 / rate:10.2f} "
                          f"{rate * T:15.1f} {rate * T * streams:15.0f} {mib:9.2f} {gen_ms:14.3f}", flush=True)


if __name__ == "__main__":
    main()
