"""Cost of a decoupled worker's late SG learning (issue #15, item 3): `reevaluate` vs `stored`.

    python benchmarks/parallel_late_sg.py                  # MNIST FCN-3, batch 256, DNI and cDNI
    python benchmarks/parallel_late_sg.py --layers 6 --device cuda

A stage's top boundary learns from the gradient of the previous batch, which arrives one step late.
`reevaluate` evaluates the SG model again (current parameters) on the kept activation and backpropagates
its loss: one SG forward and backward. `stored` backpropagates the loss through the graph of the
prediction it injected a step earlier (evaluated on a copy of the parameters of that moment): one SG
backward, plus one parameter copy per step. Printed: the median seconds of that learning alone, and of
one whole training step of the first unit (block + its DNI) with each variant, so the saving is seen
beside what it is a part of. A benchmark that prints a table, not a test: nothing here asserts a speed.
"""
import argparse
import statistics
import time

import torch

from sgbench.families.parallel.protocols import LateSG
from sgbench.families.parallel.stages import Stage
from sgbench.nets import FeedForwardNet, SGSpec
from sgbench.runtime import resolve_device, run_metadata


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_s(fn, device, steps: int, warmup: int = 3) -> float:
    times = []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(method: str, late_sg: str, layers: int, batch: int, device, steps: int) -> tuple[float, float]:
    """(seconds of the late learning, seconds of one step of unit 0 with it) for one variant."""
    torch.manual_seed(0)
    net = FeedForwardNet("fcn", layers, method, (1, 28, 28), sg=SGSpec()).to(device)
    stage = Stage(net, 0, 1)  # the first block and its DNI: the top of a stage with a cut above
    late = LateSG(stage, late_sg)
    opt = torch.optim.Adam([p for p in stage.parameters() if p.requires_grad], lr=3e-5)
    x = torch.rand(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    grad = torch.randn(batch, net.block_shapes[0][0], device=device) / batch

    def step():
        opt.zero_grad(set_to_none=True)
        out = stage(x, y)
        if late.kept is not None:
            late.learn(grad)
        late.keep(out, y)
        opt.step()

    def learn_only():
        late.keep(stage(x, y), y)
        sync(device)
        t0 = time.perf_counter()
        late.learn(grad)
        sync(device)
        return time.perf_counter() - t0

    learn = statistics.median(learn_only() for _ in range(steps))
    late.kept = None  # learnt from already: the step loop starts afresh
    return learn, median_s(step, device, steps)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (a worker's: 1)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    meta = run_metadata(device)
    print(f"# late SG learning: MNIST FCN-{a.layers}, batch {a.batch}, {a.threads} thread(s), "
          f"{meta['device']} ({meta['hardware'].get('gpu') or meta['hardware']['cpu']}), torch {meta['torch']}; "
          f"medians of {a.steps}")
    print("| method (SG) | late_sg | late learning ms | unit-0 step ms |")
    print("| --- | --- | ---: | ---: |")
    for method, sg in (("cdni", "linear on [h; label]"), ("dni", "2 x 1024 MLP")):
        for late_sg in ("reevaluate", "stored"):
            learn, step = measure(method, late_sg, a.layers, a.batch, device, a.steps)
            print(f"| {method} ({sg}) | {late_sg} | {1e3 * learn:.2f} | {1e3 * step:.2f} |")


if __name__ == "__main__":
    main()
