"""Cost of synthetic gradients on one device: steps/s of backprop vs DNI vs cDNI.

    python benchmarks/ff_speed.py                 # MNIST FCN-6 and CIFAR CNN-3, batch 256
    python benchmarks/ff_speed.py --device cuda --steps 50
    python benchmarks/ff_speed.py --against-dni-pytorch ~/src/dni-pytorch/dni.py --rounds 15 --threads 1
                                                  # side by side with koz4k/dni-pytorch, fp32 and bf16
    python benchmarks/ff_speed.py --against-dni-pytorch ~/src/dni-pytorch/dni.py --adam for-loop,fused --threads 1
                                                  # ... with each of sgbench's Adam implementations
    python benchmarks/ff_speed.py --against-dni-pytorch ~/src/dni-pytorch/dni.py --profile --threads 1
                                                  # where each side's step goes: Adam, products, rest

`--against-dni-pytorch PATH` (issue #26 item 3) times the paper's MNIST FCN-3 with a 2 x 1024 SG after
every hidden layer ([DNI] Sec. 3.2) in sgbench (sgbench.nets.FeedForwardNet, method dni, the runner's
own train_step) and in koz4k/dni-pytorch (its dni.py, loaded from the user's clone at PATH; nothing of
it is copied here): the same blocks (linear 256, BN, ReLU; sgbench.nets.fcn_blocks) and head, one
BackwardInterface(BasicSynthesizer(256, n_hidden=2, hidden_dim=1024)) after each block, Adam on every
parameter (each side's own: sgbench's as a run makes it, sgbench.fast.make_optimizer with --adam: for-loop,
sgbench.optim.Adam, torch's single-tensor numbers with a cache-friendly CPU step, or fused, torch's one-pass
kernel; torch.optim.Adam's default for dni-pytorch, as its users run it). One difference
stays: sgbench's SG puts batch norm after each hidden layer as [DNI] does, dni-pytorch's
BasicSynthesizer has none (BN on 1024 units costs about 1 % of the SG's products).
Rounds alternate (sgbench, theirs, sgbench, ...) so that a change in load falls on both; it prints the
median ms per step of each, the ratio of the medians sgbench / theirs and the quartiles of the per-round
ratios (each sgbench round over the dni-pytorch round next to it: the spread a noisy machine puts on the
ratio), per precision (bf16: torch.autocast around each forward, which in dni-pytorch also holds the
SG's backward, as a user would wrap it); and the matrix FLOPs of each side's step, whose ratio is what
the time ratio would be if both ran their products at the same rate and did nothing else (dni-pytorch
runs each SG's forward twice, in the forward pass and again to train it: 9.67 against 7.26 GFLOP, 0.75).
With `--profile` it prints instead, per side and precision, the share of the step spent in Adam's
step, in the matrix products (aten::mm / addmm) and in everything else (torch.profiler's CPU time over
--steps steps; CPU only: on a GPU the host's time says little about the kernels'): shares stay readable
on a loaded machine, where the milliseconds do not.

Random inputs of the right shape stand in for the data (speed does not depend on pixel values).
The FLOP ratio counts the matrix/conv FLOPs of one training step (torch's FlopCounterMode): what
the cost ratio would be if every product ran at the same efficiency (larger SG products can run
closer to peak, so a measured ratio may fall below it). This is a benchmark that prints figures,
not a test: nothing here asserts a speed.
"""
import argparse
import importlib.util
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sgbench import fast
from sgbench.catalog import ADAM_IMPLS
from sgbench.families.feedforward.run import train_step
from sgbench.nets import FeedForwardNet, fcn_blocks
from sgbench.runtime import autocast, resolve_device, run_metadata

SETUPS = {"mnist-fcn3": ("fcn", 3, (1, 28, 28)), "mnist-fcn6": ("fcn", 6, (1, 28, 28)),
          "cifar-cnn3": ("cnn", 3, (3, 32, 32))}


def make(setup, method, device, batch):
    arch, layers, shape = SETUPS[setup]
    torch.manual_seed(0)
    model = FeedForwardNet(arch, layers, method, shape).to(device)
    opt = fast.make_optimizer(model.trainable_parameters(), 3e-5, "eager", device)  # a run's Adam (for-loop)
    x = torch.rand(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return model, opt, x, y


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(setup, method, device, batch, steps, precision="fp32"):
    model, opt, x, y = make(setup, method, device, batch)
    # a warm-up step (allocations, cuDNN autotune), then one counted
    flops = step_flops(lambda p: train_step(model, opt, x, y, precision=p), precision)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, x, y, precision=precision)
    sync(device)
    return steps / (time.perf_counter() - t0), flops


def load_dni_pytorch(path):
    """koz4k/dni-pytorch's dni.py from the user's clone. It calls torch.nn.init.constant, which newer torch
    only has as constant_: the alias is given back for it (the one change; its code is not touched)."""
    if not hasattr(torch.nn.init, "constant"):
        torch.nn.init.constant = torch.nn.init.constant_
    spec = importlib.util.spec_from_file_location("dni_pytorch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TheirFCN(torch.nn.Module):
    """The paper's FCN-3 with dni-pytorch's BackwardInterface after every hidden block."""

    def __init__(self, dni, layers=3, width=256, sg_hidden=1024):
        super().__init__()
        self.blocks = torch.nn.ModuleList(fcn_blocks((1, 28, 28), layers, width))
        self.interfaces = torch.nn.ModuleList(
            dni.BackwardInterface(dni.BasicSynthesizer(output_dim=width, n_hidden=2, hidden_dim=sg_hidden))
            for _ in range(layers))
        self.head = torch.nn.Linear(width, 10)

    def forward(self, x):
        for block, interface in zip(self.blocks, self.interfaces):
            x = interface(block(x))
        return self.head(x)


def their_step(model, opt, x, y, precision):
    opt.zero_grad(set_to_none=True)
    with autocast(precision, x.device):
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
    loss.backward()
    opt.step()


def step_shares(step, steps: int) -> tuple[float, float, float, float]:
    """(ms per step, Adam's share, the matrix products' share, the rest's share) of `step`'s CPU time, profiled."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    adam = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step#"))
    products = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    return total / steps / 1000, adam / total, products / total, 1 - (adam + products) / total


def sgbench_step(adam, device, x, y):
    """sgbench's FCN-3 DNI step with the Adam a run makes for `adam` (sgbench.fast.make_optimizer)."""
    torch.manual_seed(0)
    model = FeedForwardNet("fcn", 3, "dni", (1, 28, 28)).to(device)
    opt = fast.make_optimizer(model.trainable_parameters(), 3e-5, "eager", device, adam)
    return lambda p: train_step(model, opt, x, y, precision=p)


def step_flops(step, precision) -> int:
    """Matrix FLOPs of one call of step(precision), after one uncounted call (the warm-up)."""
    step(precision)
    with FlopCounterMode(display=False) as counter:
        step(precision)
    return counter.get_total_flops()


def side_by_side(path, device, batch, steps, rounds, precisions, shares=False, adams=("for-loop",)):
    """Median ms per step of sgbench's (with each of `adams`) and dni-pytorch's FCN-3 DNI step, in
    alternating rounds."""
    dni = load_dni_pytorch(path)
    torch.manual_seed(0)
    x, y = torch.rand(batch, 1, 28, 28, device=device), torch.randint(0, 10, (batch,), device=device)
    theirs = TheirFCN(dni).to(device)
    their_opt = torch.optim.Adam(theirs.parameters(), lr=3e-5)  # torch's default, as dni-pytorch's users run it
    steps_of = {f"sgbench {adam}": sgbench_step(adam, device, x, y) for adam in adams}
    steps_of["dni-pytorch"] = lambda p: their_step(theirs, their_opt, x, y, p)
    if shares:
        print(f"{'precision':<9} {'side':<18} {'ms/step (profiled)':>19} {'Adam':>6} {'products':>9} {'rest':>6}")
        for precision in precisions:
            for name, step in steps_of.items():
                step(precision), step(precision)  # warm-up
                ms, adam, products, rest = step_shares(lambda: step(precision), steps)
                print(f"{precision:<9} {name:<18} {ms:>19.1f} {adam:>6.0%} {products:>9.0%} {rest:>6.0%}", flush=True)
        return
    flops = {name: step_flops(step, "fp32") for name, step in steps_of.items()}
    print("# matrix FLOPs per step: " + ", ".join(f"{n} {f / 1e9:.2f} G" for n, f in flops.items())
          + f" (sgbench / dni-pytorch {flops[next(iter(steps_of))] / flops['dni-pytorch']:.3f})")
    print(f"{'precision':<9} {'side':<18} {'ms/step':>8} {'ratio':>7} {'round ratios q25-q75':>21}   (median of "
          f"{rounds} rounds x {steps} steps, alternating)")
    for precision in precisions:
        times = {name: [] for name in steps_of}
        for name, step in steps_of.items():  # warm-up
            step(precision), step(precision)
        for _ in range(rounds):
            for name, step in steps_of.items():
                sync(device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    step(precision)
                sync(device)
                times[name].append(1000 * (time.perf_counter() - t0) / steps)
        their_ms = statistics.median(times["dni-pytorch"])
        for name in steps_of:
            ms = statistics.median(times[name])
            ratios = sorted(a / b for a, b in zip(times[name], times["dni-pytorch"]))
            q25, q75 = (statistics.quantiles(ratios, n=4)[i] for i in (0, 2)) if len(ratios) > 1 else (ratios[0],) * 2
            spread = "" if name == "dni-pytorch" else f"{q25:.2f}-{q75:.2f}"
            print(f"{precision:<9} {name:<18} {ms:>8.1f} {ms / their_ms:>7.2f} {spread:>21}", flush=True)
        print(f"{'':<9} rounds (ms): " + "; ".join(f"{n} {', '.join(f'{v:.0f}' for v in times[n])}"
                                                for n in steps_of), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="mnist-fcn6,cifar-cnn3", help=f"comma-separated, of {', '.join(SETUPS)}")
    ap.add_argument("--methods", default="backprop,dni,cdni")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=0, help="timed steps per cell (0: 20 FCN / 3 CNN on CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--against-dni-pytorch", metavar="PATH", help="dni.py of a koz4k/dni-pytorch clone: time "
                    "the paper's FCN-3 DNI step side by side with it (see above)")
    ap.add_argument("--rounds", type=int, default=15, help="alternating rounds of the side-by-side timing")
    ap.add_argument("--adam", default="for-loop", help=f"with --against-dni-pytorch: comma-separated, of "
                    f"{', '.join(ADAM_IMPLS)}: sgbench's Adam (FFConfig.adam), one sgbench side each")
    ap.add_argument("--profile", action="store_true", help="with --against-dni-pytorch: the share of each side's "
                    "step in Adam, the matrix products and the rest, instead of the timing")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated, of fp32, bf16, tf32 (CUDA)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.profile and (not args.against_dni_pytorch or device.type != "cpu"):
        ap.error("--profile goes with --against-dni-pytorch on --device cpu (it reads CPU time)")
    meta = run_metadata(device)
    print(f"# device {device} ({meta['hardware'].get('gpu', meta['hardware']['cpu'])}), "
          f"{meta['hardware']['torch_threads']} threads, torch {meta['torch']}, batch {args.batch}")
    if args.against_dni_pytorch:
        adams = args.adam.split(",")
        if not set(adams) <= set(ADAM_IMPLS):
            ap.error(f"--adam {args.adam!r}: choose from {', '.join(ADAM_IMPLS)}")
        side_by_side(args.against_dni_pytorch, device, args.batch, args.steps or 10, args.rounds,
                     args.precisions.split(","), shares=args.profile, adams=adams)
        return
    print(f"{'setup':<11} {'method':<9} {'precision':<9} {'steps/s':>9} {'ms/step':>9} {'GFLOP/step':>11} "
          f"{'cost x bp':>10} {'FLOPs x bp':>11} {'x fp32':>7}")
    for setup in args.setups.split(","):
        steps = args.steps or (20 if SETUPS[setup][0] == "fcn" or device.type == "cuda" else 3)
        base, fp32 = {}, {}
        for method in args.methods.split(","):
            for precision in args.precisions.split(","):
                rate, flops = measure(setup, method, device, args.batch, steps, precision)
                base.setdefault(precision, (rate, flops))
                fp32.setdefault(method, rate)
                print(f"{setup:<11} {method:<9} {precision:<9} {rate:>9.2f} {1000 / rate:>9.1f} {flops / 1e9:>11.2f} "
                      f"{base[precision][0] / rate:>10.2f} {flops / base[precision][1]:>11.2f} "
                      f"{rate / fp32[method]:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
