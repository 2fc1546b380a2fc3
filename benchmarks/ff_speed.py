"""Cost of synthetic gradients on one device: steps/s of backprop vs DNI vs cDNI.

    python benchmarks/ff_speed.py                 # MNIST FCN-6 and CIFAR CNN-3, batch 256
    python benchmarks/ff_speed.py --device cuda --steps 50

Random inputs of the right shape stand in for the data (speed does not depend on pixel values).
The FLOP ratio counts the matrix/conv FLOPs of one training step (torch's FlopCounterMode): what
the cost ratio would be if every product ran at the same efficiency (larger SG products can run
closer to peak, so a measured ratio may fall below it). This is a benchmark that prints figures,
not a test: nothing here asserts a speed.
"""
import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sgbench.families.feedforward.run import train_step
from sgbench.nets import FeedForwardNet
from sgbench.runtime import resolve_device, run_metadata

SETUPS = {"mnist-fcn6": ("fcn", 6, (1, 28, 28)), "cifar-cnn3": ("cnn", 3, (3, 32, 32))}


def make(setup, method, device, batch):
    arch, layers, shape = SETUPS[setup]
    torch.manual_seed(0)
    model = FeedForwardNet(arch, layers, method, shape).to(device)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=3e-5)
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return model, opt, x, y


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(setup, method, device, batch, steps):
    model, opt, x, y = make(setup, method, device, batch)
    train_step(model, opt, x, y)  # warm-up (allocations, cuDNN autotune)
    with FlopCounterMode(display=False) as counter:
        train_step(model, opt, x, y)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, x, y)
    sync(device)
    return steps / (time.perf_counter() - t0), counter.get_total_flops()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    ap.add_argument("--methods", default="backprop,dni,cdni")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=0, help="timed steps per cell (0: 20 FCN / 3 CNN on CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    meta = run_metadata(device)
    print(f"# device {device} ({meta['hardware'].get('gpu', meta['hardware']['cpu'])}), "
          f"{meta['hardware']['torch_threads']} threads, torch {meta['torch']}, batch {args.batch}")
    print(f"{'setup':<11} {'method':<9} {'steps/s':>9} {'ms/step':>9} {'GFLOP/step':>11} {'cost x bp':>10} {'FLOPs x bp':>11}")
    for setup in args.setups.split(","):
        steps = args.steps or (20 if SETUPS[setup][0] == "fcn" or device.type == "cuda" else 3)
        base = None
        for method in args.methods.split(","):
            rate, flops = measure(setup, method, device, args.batch, steps)
            base = base or (rate, flops)
            print(f"{setup:<11} {method:<9} {rate:>9.2f} {1000 / rate:>9.1f} {flops / 1e9:>11.2f} "
                  f"{base[0] / rate:>10.2f} {flops / base[1]:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
