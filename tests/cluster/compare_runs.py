"""Are two smoke-tier runs of the pipeline the same numbers? python compare_runs.py DIR_A DIR_B

Compares what a seeded CPU run determines: every metrics.json (config, data set, model, curves,
final values; not `timing`, `meta` or a timed curve such as `elapsed_s`) and every table in
results/tables, less its timing columns (seconds, milliseconds, rates, speed-ups, wait fractions).
Prints each difference and exits 1 if there is any; used by tests/cluster/local_slurm.sh to check a
run through SLURM against a local one."""
import csv
import json
import re
import sys
from pathlib import Path

NOT_DETERMINED = {"timing", "meta"}                # wall time, host, versions, start time
# elapsed_s, steps_per_s, time_to_target_s, step_ms, samples_per_s_ci95, speedup, seconds to a target,
# the parallel runs' per-target times and unit profiles (JSON cells), measured / predicted ratios, ...
TIMED = re.compile(r"(_s|_ms|speedup)(_ci95)?$|^(wait_fraction|seconds|seconds_ci95|time_to_target|profile"
                   r"|measured_over_predicted)$")


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if not TIMED.search(k)}


def metrics_content(path: Path) -> dict:
    data = {k: v for k, v in json.loads(path.read_text()).items() if k not in NOT_DETERMINED}
    data["curves"] = untimed(data["curves"])
    return data


def table_content(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [untimed(row) for row in csv.DictReader(f)]


def differences(a: Path, b: Path) -> list[str]:
    out = []
    files = {}
    for pattern, read in (("results/runs/**/metrics.json", metrics_content), ("results/tables/**/*.csv", table_content)):
        names_a = {p.relative_to(a) for p in a.glob(pattern)}
        names_b = {p.relative_to(b) for p in b.glob(pattern)}
        if not names_a:
            out.append(f"{a}: no {pattern}")
        for name in sorted(names_a ^ names_b):
            out.append(f"{name}: only in {a if name in names_a else b}")
        for name in sorted(names_a & names_b):
            files[name] = read
    for name, read in files.items():
        x, y = read(a / name), read(b / name)
        if x != y:
            if isinstance(x, dict):
                keys = sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k))
                out.append(f"{name}: differs in {', '.join(keys)}")
            else:
                rows = [i for i, (r, s) in enumerate(zip(x, y)) if r != s]
                out.append(f"{name}: {len(x)} vs {len(y)} rows; rows differing: {rows}")
    if not out:
        print(f"compare_runs: {len(files)} files equal (metrics.json less timing/meta; tables less timing columns)")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    diffs = differences(Path(sys.argv[1]), Path(sys.argv[2]))
    for d in diffs:
        print("compare_runs: DIFFERS:", d)
    sys.exit(1 if diffs else 0)
