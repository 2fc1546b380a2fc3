"""Numbers must not move: re-run a few committed reference runs' configs and compare their metrics
bit for bit (issue #22). Each run's metrics.json holds its resolved config; this trains that config
again through the family's runner (on CPU, one thread) in a temporary folder and compares every
curve and final value except the wall-clock ones (elapsed_s, timing).

    python benchmarks/reference_check.py                  # the default set below (about 5 minutes on 2 cores)
    python benchmarks/reference_check.py RUN_DIR...       # any reference runs
    python benchmarks/reference_check.py --save DIR       # also keep each rerun's metrics.json in DIR
    python benchmarks/reference_check.py --against DIR    # compare with the reruns saved there instead

Floating point differs between CPU models (SIMD paths): the feed-forward references were made on an
Intel Xeon and differ in the last digits on an AMD EPYC. So on another processor than the runs'
meta.hardware.cpu, run it with --save on main's code first, then with --against on a change.
Exit status 0 when every run matches, 1 otherwise.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REF = Path(__file__).resolve().parents[1] / "results" / "reference" / "quick" / "runs"
DEFAULT = ("feedforward/quick/mnist-fcn3-backprop-seed0", "feedforward/quick/mnist-fcn3-cdni-seed0",
           "feedforward/quick/mnist-fcn3-no_bprop-seed0", "diagnostics/quick/mnist-fcn6-cdni-middle-seed0",
           "rnn/quick/copy-T4-bptt-seed0", "rnn/quick/copy-T4-dni_bpl-seed0",
           "charlm/quick/shakespeare-gutenberg-T8-bptt-seed0", "parallel/quick/mnist-fcn3-backprop-k1-seed0",
           "parallel/quick/mnist-fcn3-cdni-k2-seed0", "parallel/quick/mnist-fcn3-ddp_split-k2-seed0")
WALL_CLOCK = {"elapsed_s", "timing", "meta", "wall_time_s", "train_time_s", "steps_per_s", "seconds_per_update",
              "step_time_s", "throughput"}


def strip(value, path=""):
    """The metrics without wall-clock values (they differ on every run)."""
    if isinstance(value, dict):
        return {k: strip(v, f"{path}.{k}") for k, v in value.items() if k not in WALL_CLOCK and "_s" != k[-2:]}
    if isinstance(value, list):
        return [strip(v, path) for v in value]
    return value


def differences(old, new, path="", out=None, limit=5):
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(old.keys() | new.keys()):
            if k not in old or k not in new:
                out.append(f"{path}.{k}: only in {'new' if k in new else 'reference'}")
            else:
                differences(old[k], new[k], f"{path}.{k}", out, limit)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            differences(a, b, f"{path}[{i}]", out, limit)
    elif old != new:
        out.append(f"{path}: reference {str(old)[:80]} != now {str(new)[:80]}")
    return out


def rerun(run_dir: Path, save: Path | None, against: Path | None) -> list[str]:
    """Train the run's config again; the differences from its metrics (or from `against`'s rerun)."""
    from sgbench.families import get
    name = f"{run_dir.parent.parent.name}-{run_dir.name}"  # family folder + run: runs/<family>/<tier>/<run>
    ref = json.loads((run_dir / "metrics.json").read_text())
    family = get(run_dir.parent.parent.name)
    config = family.config_class().from_dict(ref["config"] | {"device": "cpu"})
    if against is not None:
        ref = json.loads((against / f"{name}.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        new = family.train(config, Path(tmp) / "run")
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        (save / f"{name}.json").write_text(json.dumps(new))
    keep = ("curves", "final", "status", "model", "diverged")
    return differences({k: strip(ref.get(k)) for k in keep}, {k: strip(new.get(k)) for k in keep})


def main(argv: list[str]) -> int:
    import logging
    import time
    logging.basicConfig(level=logging.WARNING)
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="reference run folders (default: a cheap set)")
    parser.add_argument("--save", type=Path, help="write each rerun's metrics to DIR/<family>-<run>.json")
    parser.add_argument("--against", type=Path, help="compare with DIR's saved reruns, not the committed metrics")
    args = parser.parse_args(argv)
    runs = [p.resolve() for p in args.runs] or [REF / d for d in DEFAULT]
    bad = 0
    for run in runs:
        t0 = time.perf_counter()
        diff = rerun(run, args.save, args.against)
        bad += bool(diff)
        print(f"{'same' if not diff else 'DIFFERS'}  {run.relative_to(REF) if run.is_relative_to(REF) else run}"
              f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
        for line in diff:
            print("    " + line)
    print(f"{len(runs) - bad} of {len(runs)} runs bit for bit the same")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
