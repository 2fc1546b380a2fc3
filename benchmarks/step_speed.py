"""Speed of one feed-forward training step in each form of sgbench.fast, against its launch and FLOP bounds.

    python benchmarks/step_speed.py                              # CPU: MNIST FCN-6, backprop/dni/cdni
    python benchmarks/step_speed.py --device cuda --setups mnist-fcn6,mnist-fcn3,cifar-cnn3 --json out.json

Per net, method and mode (eager: the run's step as it always ran; fused: the same step on
device-resident batches; captured: the fused step replayed as a CUDA graph, CUDA only; stacked: SEEDS
seeds of an FCN as one batched step, captured on CUDA, fused on a CPU) it prints:

* steps/s (median of REPEATS timings) and, for stacked, seed-steps/s (seeds x steps/s);
* ops/step: aten operations the host dispatches in one step (a TorchDispatchMode counts them); a
  captured replay dispatches none; kern-ops: those of them that launch a kernel on a GPU (not views
  or allocations): about what a graph of the step holds;
* kernels/step: GPU kernels the profiler sees in one step (CUDA only);
* the launch bound: ops/step x the measured cost of dispatching one tiny op (eager, fused), or
  kernels/step x the measured cost of one node of a replayed graph (captured);
* the FLOP bound: the step's FLOPs (torch.utils.flop_counter: matrix products and convolutions,
  forward and backward) over the device's measured fp32 matrix-product rate;
* ratio: measured step time / the larger bound (1.0: at the bound).

Random uint8 images of the right shape stand in for the data. The paper's SG models (FCN DNI: 2x1024
MLP, cDNI: linear on [h; label]; CNN: two 128-channel 5x5 conv layers and a conv). A benchmark that
prints figures; nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sgbench import fast
from sgbench.families.feedforward.run import BatchStream, UpdateSchedule, train_step
from sgbench.nets import FeedForwardNet, SGSpec
from sgbench.runtime import resolve_device, run_metadata

SETUPS = {"mnist-fcn6": ("fcn", 6, (1, 28, 28)), "mnist-fcn3": ("fcn", 3, (1, 28, 28)),
          "cifar-cnn3": ("cnn", 3, (3, 32, 32))}
N_TRAIN = 4096  # random training images on the device (several epochs' worth of batches)


class OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched while active."""

    def __init__(self):
        super().__init__()
        self.ops = self.kernel_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.kernel_ops += func.overloadpacket.__name__.rstrip("_") not in NO_KERNEL
        return func(*args, **(kwargs or {}))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_nets(setup, method, seeds, device):
    arch, layers, shape = SETUPS[setup]
    nets = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        nets.append(FeedForwardNet(arch, layers, method, shape).to(device))
    return nets, shape


def make_data(shape, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (N_TRAIN, *shape), generator=g, dtype=torch.uint8).to(device)
    return x, torch.randint(0, 10, (N_TRAIN,), generator=g).to(device)


def make_stepper(setup, method, mode, device, batch, seeds):
    """A callable running one step of `mode`, and the number of seeds it trains."""
    x, y = make_data(SETUPS[setup][2], device)
    if mode == "stacked":
        nets, _ = make_nets(setup, method, seeds, device)
        stacked = fast.StackedFCN(nets).to(device)
        inner = "captured" if device.type == "cuda" else "fused"
        opt = fast.make_optimizer(stacked.trainable_parameters(), 3e-5, inner, device)
        streams = [BatchStream(N_TRAIN, batch, s) for s in range(seeds)]
        stepper = fast.StackedStepper(inner, stacked, opt, streams, x, y)
        return (lambda: stepper()), seeds
    (net,), _ = make_nets(setup, method, 1, device)
    opt = fast.make_optimizer(net.trainable_parameters(), 3e-5, mode, device)
    stepper = fast.Stepper(mode, net, opt, BatchStream(N_TRAIN, batch, 0), x, y, UpdateSchedule(len(net.blocks) + 1),
                           train_step)
    counter = iter(range(1, 1 << 62))
    return (lambda: stepper(next(counter))), 1


# aten ops that only make a view, change metadata or allocate: no kernel on a GPU
NO_KERNEL = {"view", "_unsafe_view", "t", "transpose", "expand", "detach", "alias", "as_strided", "permute",
             "reshape", "_reshape_alias", "slice", "select", "unsqueeze", "squeeze", "empty", "empty_like",
             "empty_strided", "new_empty", "new_empty_strided", "split", "unbind", "view_as", "_to_copy_noop",
             "lift_fresh", "numpy_T", "unflatten", "flatten", "narrow", "clone_noop"}


def count_ops(run) -> tuple[int, int]:
    """(aten ops dispatched, of which launch a kernel on a GPU) in one call of `run`."""
    with OpCounter() as counter:
        run()
    return counter.ops, counter.kernel_ops


def count_kernels(run, device, steps: int = 3) -> float | None:
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            run()
        sync(device)
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    return len(kernels) / steps


def split_flops(counter: FlopCounterMode) -> tuple[float, float]:
    """(matrix-product FLOPs, convolution FLOPs) a FlopCounterMode saw."""
    conv = sum(n for op, n in counter.get_flop_counts().get("Global", {}).items() if "conv" in str(op))
    return counter.get_total_flops() - conv, conv


def count_flops(setup, method, device, batch) -> tuple[float, float]:
    """(matrix-product, convolution) FLOPs of one fused step (the same arithmetic every mode does)."""
    run, _ = make_stepper(setup, method, "fused", device, batch, 1)
    run()
    with FlopCounterMode(display=False) as counter:
        run()
    return split_flops(counter)


def time_steps(run, device, steps: int, repeats: int) -> float:
    """Median seconds per step over `repeats` timings of `steps` steps."""
    per_step = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            run()
        sync(device)
        per_step.append((time.perf_counter() - t0) / steps)
    return statistics.median(per_step)


def dispatch_cost(device) -> float:
    """Seconds to dispatch one tiny op from Python (an in-place add on one element), host-bound."""
    t = torch.zeros(1, device=device)
    for _ in range(100):
        t.add_(1.0)
    sync(device)
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        t.add_(1.0)
    sync(device)
    return (time.perf_counter() - t0) / n


def graph_node_cost(device) -> float | None:
    """Seconds per node of a replayed CUDA graph of tiny kernels (CUDA only)."""
    if device.type != "cuda":
        return None
    t, nodes = torch.zeros(1, device=device), 500
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        t.add_(1.0)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(nodes):
            t.add_(1.0)
    graph.replay()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(20):
        graph.replay()
    sync(device)
    return (time.perf_counter() - t0) / (20 * nodes)


def best_seconds(fn, device, reps: int = 5) -> float:
    fn()
    sync(device)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def matmul_rate(device) -> float:
    """Measured fp32 matrix-product FLOP/s on the device, with torch's matmul TF32 setting (off by default)."""
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n ** 3 / best_seconds(lambda: a @ b, device)


def conv_rate(device) -> float:
    """Measured FLOP/s of a CNN block's 5x5, 128-channel convolution at batch 256 (cuDNN may use TF32 for
    it: torch's default for convolutions), forward only."""
    batch = 256 if device.type == "cuda" else 16
    x = torch.randn(batch, 128, 16, 16, device=device)
    conv = torch.nn.Conv2d(128, 128, 5, padding=2).to(device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        conv(x)
    with torch.no_grad():
        return counter.get_total_flops() / best_seconds(lambda: conv(x), device)


def flop_seconds(flops: tuple[float, float], costs: dict) -> float:
    return flops[0] / costs["flop_rate"] + flops[1] / costs["conv_rate"]


def measure(setup, method, mode, device, batch, seeds, steps, repeats, costs, flops):
    run, n_seeds = make_stepper(setup, method, mode, device, batch, seeds)
    for _ in range(fast.CAPTURE_WARMUP_STEPS + 2):  # warm-up; captured: the capture happens here
        run()
    ops, kernel_ops = count_ops(run)
    kernels = count_kernels(run, device)
    seconds = time_steps(run, device, steps, repeats)
    if mode == "captured" or (mode == "stacked" and device.type == "cuda"):
        launch = (kernels or 0) * costs["graph_node_s"]
    else:
        launch = ops * costs["dispatch_s"]
    flop_bound = n_seeds * flop_seconds(flops, costs)
    return {"setup": setup, "method": method, "mode": mode, "seeds": n_seeds, "batch": batch,
            "steps_per_s": 1 / seconds, "seed_steps_per_s": n_seeds / seconds, "ms_per_step": 1000 * seconds,
            "ops_per_step": ops, "kernel_ops_per_step": kernel_ops, "kernels_per_step": kernels,
            "gflop_per_step": n_seeds * sum(flops) / 1e9,
            "launch_bound_ms": 1000 * launch, "flop_bound_ms": 1000 * flop_bound,
            "ratio": seconds / max(launch, flop_bound)}


# ---------------------------------------------------------------- projection to a GPU from op counts
DATA_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar10-jpeg": (3, 32, 32)}
COUNT_BATCH = 16  # ops per step do not depend on the batch; FLOPs grow linearly with it


def step_counts(arch, layers, method, shape, batch, sg_hidden_layers=None, placement="every", seeds=3) -> dict:
    """Counted on this machine (any device): aten ops the host dispatches in one eager step (Adam with
    foreach, CUDA's default), kernel-launching ops of one fused step (what a captured graph holds),
    the same for `seeds` stacked seeds where the config stacks, and the FLOPs of one step at `batch`."""
    cpu, out = torch.device("cpu"), {}
    x, y = make_data(shape, cpu)
    for mode in ("eager", "fused", "stacked"):
        nets = []
        for seed in range(seeds if mode == "stacked" else 1):
            torch.manual_seed(seed)
            nets.append(FeedForwardNet(arch, layers, method, shape, sg=SGSpec(hidden_layers=sg_hidden_layers),
                                       placement=placement))
        if mode == "stacked":
            if fast.net_stack_blockers(nets[0]):
                out["stacked_kernels"] = None
                continue
            stacked = fast.StackedFCN(nets)
            opt = torch.optim.Adam(stacked.trainable_parameters(), lr=3e-5, foreach=True)
            stepper = fast.StackedStepper("fused", stacked, opt, [BatchStream(N_TRAIN, COUNT_BATCH, s) for s in range(seeds)],
                                          x, y)
            run = stepper
        else:
            opt = torch.optim.Adam(nets[0].trainable_parameters(), lr=3e-5, foreach=True)
            stepper = fast.Stepper(mode, nets[0], opt, BatchStream(N_TRAIN, COUNT_BATCH, 0), x, y,
                                   UpdateSchedule(layers + 1), train_step)
            run = (lambda st=stepper: st(1))
        run(), run()
        ops, kernels = count_ops(run)
        out[f"{mode}_ops"], out[f"{mode}_kernels"] = ops, kernels
        if mode == "fused":
            with FlopCounterMode(display=False) as counter:
                run()
            out["flops"] = tuple(f * batch / COUNT_BATCH for f in split_flops(counter))
    return out


def project_ms(counts: dict, kind: str, a: argparse.Namespace, per_op_s: float) -> float:
    """Projected seconds per step on the GPU: the larger of the launch bound and the FLOP bound. Eager
    and fused launch from the host (ops x the per-op cost calibrated on the measured eager step);
    captured and stacked (captured) replay graph nodes (kernel-launching ops x node cost)."""
    seeds = a.seeds if kind == "stacked" else 1
    mm, conv = counts["flops"]
    flop_s = seeds * (mm / (a.tflops * 1e12) + conv / (a.conv_tflops * 1e12))
    if kind in ("eager", "fused"):
        return max(counts[f"{kind}_ops"] * per_op_s, flop_s)
    kernels = counts["stacked_kernels" if kind == "stacked" else "fused_kernels"]
    return max(kernels * a.node_us * 1e-6, flop_s)


def tier_points(tier_file: str, families=("feedforward", "diagnostics")):
    """(family, resolved config as a dict, number of seeds) per run of a tier file but the seed, each run
    once (sgbench.families.grid: grids that repeat a run name it once, as the pipeline does)."""
    import dataclasses
    from pathlib import Path

    import yaml

    from sgbench.families import grid
    spec = yaml.safe_load(Path(tier_file).read_text())
    runs = grid.expand(spec, Path(tier_file).stem)
    for family in families:
        points: dict = {}
        for cfg in runs[family].values():
            p = dataclasses.asdict(cfg.resolved())
            points.setdefault(tuple(sorted((k, str(v)) for k, v in p.items() if k != "seed")), [p, 0])[1] += 1
        for p, seeds in points.values():
            yield family, p, seeds


def paper_cost(a) -> None:
    """GPU-hours of a tier's feed-forward and diagnostics runs, eager vs the fast path, projected from
    op counts on this machine and the given GPU figures; prints a table and the totals."""
    ref = step_counts("fcn", 6, "backprop", (1, 28, 28), a.batch)
    per_op_s = a.eager_ref_ms * 1e-3 / ref["eager_ops"]
    print(f"# eager MNIST FCN-6 backprop measured at {a.eager_ref_ms} ms/step on the GPU: {ref['eager_ops']} ops "
          f"-> {per_op_s * 1e6:.2f} us per dispatched op; graph node {a.node_us} us; fp32 {a.tflops} TFLOP/s, "
          f"conv {a.conv_tflops} TFLOP/s; "
          f"{a.seeds} seeds per stacked job")
    print(f"{'family':<12} {'config':<40} {'runs':>4} {'iters':>7} {'eager ms':>9} {'fast':>8} {'1-seed ms':>9} "
          f"{'stack ms/seed':>13} {'eager h':>8} {'1-seed h':>8} {'stack h':>8}")
    cache, totals, table1 = {}, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    for family, p, seeds in tier_points(a.paper_cost):
        key = (p["dataset"], p["arch"], p["layers"], p["method"], p.get("sg_hidden_layers"), p.get("dni_placement", "every"))
        if key not in cache:
            cache[key] = step_counts(p["arch"], p["layers"], p["method"], DATA_SHAPES[p["dataset"]], a.batch,
                                     p.get("sg_hidden_layers"), p.get("dni_placement", "every"), a.seeds)
        counts = cache[key]
        capturable = p.get("update_prob", 1.0) == 1.0 and not p.get("warmup") and not p.get("update_periods")
        kind = "captured" if capturable else "fused"
        eager_s = project_ms(counts, "eager", a, per_op_s)
        single_s = project_ms(counts, kind, a, per_op_s)
        stack = capturable and counts["stacked_kernels"] is not None and seeds % a.seeds == 0
        stacked_s = project_ms(counts, "stacked", a, per_op_s) / a.seeds if stack else single_s  # per seed
        hours = [seeds * p["iterations"] * t / 3600 for t in (eager_s, single_s, stacked_s)]
        totals = [t + h for t, h in zip(totals, hours)]
        if family == "feedforward" and (p["dataset"], p["arch"]) == ("mnist", "fcn") and capturable and \
                p["method"] in ("backprop", "dni", "cdni", "no_bprop"):
            table1 = [t + h for t, h in zip(table1, hours)]
        defaults = {"update_prob": 1.0, "dni_placement": "every", "warmup": 0.0, "sg_loss_weight": 1.0}
        name = f"{p['dataset']} {p['arch']}{p['layers']} {p['method']}" + "".join(
            f" {k}={v}" for k, v in p.items() if k in defaults and v != defaults[k]) + (
            f" sg_hidden={p['sg_hidden_layers']}" if family == "diagnostics" and p["method"] != "backprop" else "")
        print(f"{family:<12} {name:<40} {seeds:>4} {p['iterations']:>7} {eager_s * 1e3:>9.2f} {kind:>8} "
              f"{single_s * 1e3:>9.3f} {stacked_s * 1e3:>13.3f} {hours[0]:>8.2f} {hours[1]:>8.2f} {hours[2]:>8.2f}",
              flush=True)
    print(f"# MNIST FCN Table 1 (the gpu tier's grid at the paper's budget) GPU-hours: eager {table1[0]:.2f}, "
          f"captured one seed per job {table1[1]:.2f}, {a.seeds} seeds stacked per job {table1[2]:.2f}")
    print(f"# total GPU-hours: eager {totals[0]:.2f}; fast path, one seed per job {totals[1]:.2f} "
          f"(x{totals[0] / totals[1]:.1f}); fast path, {a.seeds} seeds stacked per job where they stack {totals[2]:.2f} "
          f"(x{totals[0] / totals[2]:.1f}). Evaluation, probes and job start-up not included.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="mnist-fcn6", help=f"comma-separated, of {', '.join(SETUPS)}")
    ap.add_argument("--methods", default="backprop,dni,cdni")
    ap.add_argument("--modes", default="", help="comma-separated of eager,fused,captured,stacked "
                                                "(default: all the device has; captured needs CUDA)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the stacked mode")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=0, help="timed steps per repeat (0: 200 on CUDA, 5 on a CPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="also write the rows and the device's costs to this file")
    proj = ap.add_argument_group("projection to a GPU from op counts (no timing): --paper-cost TIER_FILE")
    proj.add_argument("--paper-cost", metavar="TIER_FILE", help="project a tier's feed-forward GPU-hours, eager vs fast")
    proj.add_argument("--eager-ref-ms", type=float, default=1e3 * 256 / 62931,
                      help="measured eager MNIST FCN-6 backprop ms/step on the GPU (default: the H200's 62,931 "
                           "samples/s at batch 256)")
    proj.add_argument("--node-us", type=float, default=3.0, help="cost of one node of a replayed graph, us")
    proj.add_argument("--tflops", type=float, default=40.0, help="fp32 matrix-product rate, TFLOP/s")
    proj.add_argument("--conv-tflops", type=float, default=100.0,
                      help="convolution rate, TFLOP/s (cuDNN's TF32 convolutions, torch's default)")
    args = ap.parse_args()
    if args.paper_cost:
        return paper_cost(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    modes = args.modes.split(",") if args.modes else (
        ["eager", "fused", "captured", "stacked"] if device.type == "cuda" else ["eager", "fused", "stacked"])
    if "captured" in modes and device.type != "cuda":
        ap.error("mode captured needs --device cuda")
    steps = args.steps or (200 if device.type == "cuda" else 5)
    meta = run_metadata(device)
    costs = {"dispatch_s": dispatch_cost(device), "graph_node_s": graph_node_cost(device),
             "flop_rate": matmul_rate(device), "conv_rate": conv_rate(device)}
    node = f"{costs['graph_node_s'] * 1e6:.2f} us" if costs["graph_node_s"] else "n/a"
    print(f"# device {device} ({meta['hardware'].get('gpu', meta['hardware']['cpu'])}), "
          f"{meta['hardware']['torch_threads']} threads, torch {meta['torch']}, batch {args.batch}, "
          f"{steps} steps x {args.repeats} repeats")
    print(f"# one dispatched op {costs['dispatch_s'] * 1e6:.2f} us, one graph node {node}, "
          f"fp32 matmul {costs['flop_rate'] / 1e12:.3f} TFLOP/s, 5x5 conv {costs['conv_rate'] / 1e12:.3f} TFLOP/s")
    header = (f"{'setup':<11} {'method':<9} {'mode':<9} {'seeds':>5} {'steps/s':>9} {'seed-st/s':>9} {'ms/step':>9} "
              f"{'ops/step':>8} {'kern-ops':>8} {'kern/step':>9} {'GFLOP':>7} {'launch ms':>9} {'FLOP ms':>8} {'ratio':>6}")
    print(header, flush=True)
    rows = []
    for setup in args.setups.split(","):
        for method in args.methods.split(","):
            flops = count_flops(setup, method, device, args.batch)
            for mode in modes:
                if mode == "stacked" and SETUPS[setup][0] != "fcn":
                    continue
                try:
                    row = measure(setup, method, mode, device, args.batch, args.seeds, steps, args.repeats, costs,
                                  flops)
                except Exception as e:  # noqa: BLE001  (one broken cell must not hide the others' figures)
                    print(f"{setup:<11} {method:<9} {mode:<9} FAILED: {type(e).__name__}: {e}", flush=True)
                    rows.append({"setup": setup, "method": method, "mode": mode, "error": f"{type(e).__name__}: {e}"})
                    continue
                rows.append(row)
                kern = "-" if row["kernels_per_step"] is None else f"{row['kernels_per_step']:.0f}"
                print(f"{setup:<11} {method:<9} {mode:<9} {row['seeds']:>5} {row['steps_per_s']:>9.2f} "
                      f"{row['seed_steps_per_s']:>9.2f} {row['ms_per_step']:>9.2f} {row['ops_per_step']:>8} "
                      f"{row['kernel_ops_per_step']:>8} {kern:>9} "
                      f"{row['gflop_per_step']:>7.2f} {row['launch_bound_ms']:>9.3f} {row['flop_bound_ms']:>8.3f} "
                      f"{row['ratio']:>6.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "costs": costs, "args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
