"""Run a tier's feed-forward runs on one machine without Snakemake (the lent GPU machine has none).

    python3 benchmarks/gpu_tier.py --tier gpu --out runs --jobs 4 --deadline-s 300

Expands workflows/config/tiers/<tier>.yaml's `feedforward` grids as the pipeline does
(sgbench.families.grid: one run per point, the pipeline's run names and flags), runs `python -m sgbench train-ff` for
each (or, with --seeds-per-job, one job per group of seeds), JOBS at a time (they share the GPU), and
stops at the deadline: runs not started are listed as
not run, running ones are stopped (their checkpoint stays). Prints one line per run and the wall time;
the runs' metrics.json files are what `sgbench aggregate` reads afterwards.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sgbench.families import grid


def expand(tier: str, seeds_per_job: int) -> dict[str, list[str]]:
    """{job name: train-ff flags} for the tier's feed-forward runs, expanded as the pipeline does. With
    seeds_per_job > 1, runs that differ only in their seed go to one job (`--seeds`, sgbench.fast's
    stacked seeds) in groups of that many, each seed's run in its own folder, named as the pipeline's."""
    with open(ROOT / "workflows" / "config" / "tiers" / f"{tier}.yaml") as f:
        spec = yaml.safe_load(f)
    runs = grid.expand_family("feedforward", spec.get("feedforward", []), tier)
    jobs, groups = {}, {}
    for name, cfg in runs.items():
        flags = grid.run_flags("feedforward", cfg, "cuda").split()[:-2]
        if seeds_per_job == 1:
            jobs[name] = flags
            continue
        at = flags.index("--seed")
        rest = tuple(flags[:at] + flags[at + 2:])
        groups.setdefault((name.rsplit("-seed", 1)[0], rest), []).append(cfg.seed)
    for (stem, rest), seeds in groups.items():
        for i in range(0, len(seeds), seeds_per_job):
            chunk = seeds[i:i + seeds_per_job]
            jobs[f"{stem}-seed{{seed}}" if len(chunk) > 1 else f"{stem}-seed{chunk[0]}"] = (
                [*rest, "--seeds", ",".join(map(str, chunk))] if len(chunk) > 1 else [*rest, "--seed", str(chunk[0])])
    return jobs


def seeds_of(flags: list[str]) -> list[int]:
    key = "--seeds" if "--seeds" in flags else "--seed"
    return [int(v) for v in flags[flags.index(key) + 1].split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", default="gpu")
    ap.add_argument("--out", required=True, help="folder for the runs (OUT/<run>/metrics.json)")
    ap.add_argument("--jobs", type=int, default=4, help="runs at once")
    ap.add_argument("--deadline-s", type=float, default=300, help="stop starting and stop running runs after this")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seeds-per-job", type=int, default=1, help="train this many seeds of a config in one job")
    args = ap.parse_args()
    runs, out = expand(args.tier, args.seeds_per_job), Path(args.out)
    env = os.environ | {"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    pending, running, done = list(runs.items()), {}, {}
    t0 = time.monotonic()
    print(f"# tier {args.tier}: {len(runs)} jobs ({args.seeds_per_job} seeds per job where they group), "
          f"{args.jobs} at a time, deadline {args.deadline_s:.0f} s", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the runs
    try:
        while pending or running:
            late = time.monotonic() - t0 > args.deadline_s
            while pending and len(running) < args.jobs and not late:
                name, flags = pending.pop(0)
                (out / "logs").mkdir(parents=True, exist_ok=True)
                log = open(out / "logs" / f"{name.replace('{seed}', 'S')}.log", "w")  # noqa: SIM115  (closed below)
                cmd = [sys.executable, "-m", "sgbench", "train-ff", *flags, "--device", args.device, "--threads", "1",
                       "--out", str(out / name)]
                running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log, time.monotonic())
            for name, (proc, log, start) in list(running.items()):
                if late and proc.poll() is None:
                    proc.terminate()
                    proc.wait()
                if proc.poll() is not None:
                    log.close()
                    ok = all((out / name.format(seed=s) / "metrics.json").exists() for s in seeds_of(runs[name]))
                    done[name] = ("completed" if ok else f"failed (exit {proc.returncode})") if not late or ok else "stopped"
                    print(f"{name:<28} {done[name]:<16} {time.monotonic() - start:7.1f} s", flush=True)
                    del running[name]
            if late:
                for name, _ in pending:
                    done[name] = "not run"
                    print(f"{name:<28} not run", flush=True)
                pending = []
            time.sleep(0.2)
    finally:
        for proc, log, _ in running.values():  # interrupted: stop the runs (their checkpoints stay)
            proc.terminate()
            proc.wait()
            log.close()
    wall = time.monotonic() - t0
    completed = sum(v == "completed" for v in done.values())
    print(f"# {completed}/{len(runs)} jobs completed in {wall:.1f} s wall", flush=True)
    return 0 if completed == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
