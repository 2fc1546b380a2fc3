"""Does a speed-up keep every number? Short runs of each runner at git revision REV and in the working
tree, compared metrics.json for metrics.json.

    SGBENCH_DATA=../shared/data python benchmarks/same_numbers.py --against abcb36f

Each run is the command line's (`sgbench train-rnn / train-charlm / train-ff`), on the CPU, one thread,
once with REV's sgbench on PYTHONPATH (a checkout under /tmp, as rnn_speed.py --against makes) and once
with the working tree's. Every field but the timing, the metadata and the elapsed-seconds curves must be
equal: the curves, the curriculum, the final numbers, the activation memory. It prints one line per
run and exits 1 if any differs. The runs cover the RNN methods (copy and repeat copy, T from 1 to 17,
lockstep streams, clipping), the char-LM methods and the feed-forward step (backprop / dni / cdni with
an LR milestone, random layer updates, two stacked seeds, a CNN): where issue #24's and #26's speed-ups
act. A check that prints, not a test: its 32 runs took 10 minutes on a shared 2-core AMD EPYC.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rnn_speed import ROOT, base_checkout

from sgbench import families

CPU = ["--device", "cpu", "--threads", "1", "--quiet"]
RNN = ["train-rnn", "--timesteps", "6000", "--hidden-size", "32", "--batch-size", "8", "--curriculum-window", "10",
       "--threshold", "4", "--log-points", "10", "--seed", "3", *CPU]
CHARLM = ["train-charlm", "--T", "5", "--timesteps", "1500", "--batch-size", "8", "--hidden-size", "32",
          "--eval-every", "500", "--eval-chars", "2000", *CPU]
FF = ["train-ff", "--iterations", "200", "--batch-size", "64", "--test-limit", "500", "--eval-every", "100", *CPU]
RUNS = {
    "rnn-copy-bptt-T4": RNN + ["--method", "bptt", "--T", "4"],
    "rnn-copy-dni-T4": RNN + ["--method", "dni", "--T", "4"],
    "rnn-copy-dni_aux-T3-clip": RNN + ["--method", "dni_aux", "--T", "3", "--clip", "0.05"],
    "rnn-copy-dni_bpl-T4": RNN + ["--method", "dni_bpl", "--T", "4", "--bpl-horizon", "3"],
    "rnn-repeat_copy-dni-T5": RNN + ["--task", "repeat_copy", "--method", "dni", "--T", "5"],
    "rnn-copy-bptt-T1": RNN + ["--method", "bptt", "--T", "1"],
    "rnn-copy-dni-T17-lockstep": RNN + ["--method", "dni", "--T", "17", "--streams", "lockstep"],
    "charlm-bptt": CHARLM + ["--method", "bptt"],
    "charlm-dni": CHARLM + ["--method", "dni"],
    "charlm-dni_bpl": CHARLM + ["--method", "dni_bpl"],
    "ff-fcn3-backprop": FF + ["--method", "backprop", "--lr-milestones", "0.5"],
    "ff-fcn3-dni": FF + ["--method", "dni"],
    "ff-fcn3-cdni": FF + ["--method", "cdni"],
    "ff-fcn6-dni-async": FF + ["--method", "dni", "--layers", "6", "--update-prob", "0.5"],
    "ff-fcn3-dni-2seeds": FF + ["--method", "dni", "--seeds", "0,1"],
    "ff-cnn3-cdni": ["train-ff", "--arch", "cnn", "--dataset", "cifar10", "--method", "cdni", "--iterations", "40",
                     "--batch-size", "32", "--test-limit", "200", "--eval-every", "20", *CPU],
}


def numbers(path: Path) -> dict:
    """metrics.json less what a speed-up may change: timing, metadata, elapsed seconds; its config as the
    working tree's code records it (RunConfig.as_recorded: a setting added since, at the value every
    earlier run had, is the same run; e.g. `adam: for-loop` of a feed-forward run)."""
    m = json.loads(path.read_text())
    m["config"] = families.get(m["experiment"]).config_class().as_recorded(m["config"])
    m.pop("timing", None), m.pop("meta", None)
    m["curves"] = {k: v for k, v in m.get("curves", {}).items() if k not in ("elapsed_s", "wall_s")}
    return m


def train(root: Path, args: list[str], out: Path) -> list[Path]:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "sgbench", *args, "--out", str(out)], env=env, cwd=root, check=True)
    return sorted(out.rglob("metrics.json"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="git revision whose numbers the working tree must give")
    ap.add_argument("--only", default="", help="comma-separated run names (default: all)")
    args = ap.parse_args()
    if not os.environ.get("SGBENCH_DATA"):
        sys.exit("set SGBENCH_DATA to the data root (MNIST, CIFAR-10 and the Shakespeare corpus), e.g. ../shared/data")
    base = base_checkout(args.against)
    names = args.only.split(",") if args.only else list(RUNS)
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        sys.exit(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    print(f"# {args.against} ({base}) vs the working tree ({ROOT}); CPU, one thread")
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            old, new = (train(root, RUNS[name], Path(tmp) / side / name) for side, root in
                        (("base", base), ("new", ROOT)))
            same = [p.relative_to(Path(tmp) / "base" / name) == q.relative_to(Path(tmp) / "new" / name)
                    and numbers(p) == numbers(q) for p, q in zip(old, new)]
            ok = len(old) == len(new) > 0 and all(same)
            differ += not ok
            print(f"{name:28} {'same numbers' if ok else 'DIFFERENT'} ({len(new)} metrics.json)", flush=True)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
