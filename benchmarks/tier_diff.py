"""Two runs of one tier, cell by cell: did a change of the tier's settings (issue #26: the long tier
moved to the fused Adam, with its own learning-rate selection) move a feed-forward result?

    python benchmarks/tier_diff.py --base OLD/tables/long --new results/tables/long \\
        --labels for-loop,fused --out results/reference/long/vs-for-loop

It reads the two tiers' run tables (`feedforward_runs.csv`, `diagnostics_runs.csv`, as the pipeline's
aggregate rule writes them), pairs the runs of each cell seed by seed (a cell: net, method and every
setting the family's tables key runs by), and prints and writes (OUT.md, OUT.csv) per cell what
benchmarks/precision_parity.py prints for its pairs: both means, the paired difference new - base of the
final test error with its 95 % t-interval, whether the new mean leaves the base cell's interval, and the
median ratio of seconds per step. Unlike precision_parity.py the two sides need not share a learning
rate: each side's rate is listed beside its cell. It trains nothing and reads no torch.
"""
import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd

from precision_parity import markdown, parity_table
from sgbench import runtime
from sgbench.families.diagnostics.tables import KEYS as DIAGNOSTICS_KEYS
from sgbench.families.feedforward.config import FFConfig
from sgbench.families.feedforward.tables import RUN_KEYS as FF_KEYS

# The run tables this compares, and the columns that name a cell in each: the families' own run keys
# less the seed, which pairs the runs of a cell.
TABLES = {"feedforward_runs.csv": [k for k in FF_KEYS if k != "seed"],
          "diagnostics_runs.csv": [k for k in DIAGNOSTICS_KEYS if k != "seed"]}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(FFConfig)}  # both families' settings


def at_default(row: pd.Series, key: str) -> bool:
    """Whether a cell's setting is the one its config leaves it at: the SG's width is the method's own
    (the tables' `default_sg`, the same on both sides of a pair: FFConfig's default, None, means the
    paper's SG for the method)."""
    return bool(row["default_sg_base"]) if key == "sg_hidden_layers" else row[key] == DEFAULTS[key]


def cell_name(table: str, row: pd.Series, keys: list[str]) -> str:
    """The method and each setting off its default (a setting at its default is left out)."""
    extra = [f"{k}={row[k]}" for k in keys[4:] if not pd.isna(row[k]) and not at_default(row, k)]
    kind = "diagnostics " if table.startswith("diagnostics") else ""
    return kind + " ".join([row["method"]] + extra)


def pairs(base: Path, new: Path, labels: tuple[str, str]) -> tuple[list[dict], pd.DataFrame]:
    """The seed-by-seed pairs, and each cell's learning rate on both sides."""
    out, rates = [], []
    for table, keys in TABLES.items():
        sides = [pd.read_csv(folder / table) for folder in (base, new)]
        if any(df.empty for df in sides):
            continue
        merged = sides[0].merge(sides[1], on=keys + ["seed"], suffixes=("_base", "_new"), validate="1:1")
        missing = max(len(df) for df in sides) - len(merged)
        if missing:
            raise SystemExit(f"{table}: {missing} runs have no partner of the same cell and seed on the other side "
                             f"({base} against {new}): compare two runs of the same tier")
        for _, r in merged.iterrows():
            cell = dict(task=r["dataset"], net=f"{r['arch'].upper()}-{r['layers']}", method=cell_name(table, r, keys))
            status = next((s for s in (r["status_base"], r["status_new"]) if s != "completed"), "completed")
            out.append({**cell, "seed": r["seed"], "metric": "test error %", labels[0]: r["test_error_base"],
                        labels[1]: r["test_error_new"], f"{labels[0]}_step_s": 1.0 / r["steps_per_s_base"],
                        f"{labels[1]}_step_s": 1.0 / r["steps_per_s_new"], "status": status})
            rates.append({**cell, f"lr {labels[0]}": r["lr_base"], f"lr {labels[1]}": r["lr_new"]})
    if not out:
        raise SystemExit(f"no feed-forward or diagnostics runs in both {base} and {new}")
    return out, pd.DataFrame(rates).drop_duplicates()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True, help="the earlier run's tables/<tier>/ folder")
    p.add_argument("--new", type=Path, required=True, help="the new run's tables/<tier>/ folder")
    p.add_argument("--labels", default="base,new", help="the two sides' names, base first (e.g. for-loop,fused)")
    p.add_argument("--out", type=Path, help="write OUT.md and OUT.csv (the pairs)")
    a = p.parse_args(argv)
    labels = tuple(a.labels.split(","))
    if len(labels) != 2 or labels[0] == labels[1]:
        p.error(f"--labels {a.labels!r}: give two different names, base first, e.g. for-loop,fused")
    for folder in (a.base, a.new):
        if not all((folder / t).exists() for t in TABLES):
            p.error(f"{folder} lacks {' or '.join(TABLES)}: give a tier's tables folder (results/tables/<tier>)")
    found, rates = pairs(a.base, a.new, labels)
    table = parity_table(found, *labels)
    text = markdown(table, a.new.name, a.base, *labels)
    lr_lines = ["", "Learning rate of each cell on both sides:", "",
                "| task | net | method | " + " | ".join(rates.columns[3:]) + " |",
                "|---|---|---|" + "---|" * (len(rates.columns) - 3)]
    lr_lines += ["| " + " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in row) + " |"
                 for row in rates.itertuples(index=False)]
    text += "\n".join(lr_lines) + "\n"
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        runtime.atomic_write_bytes(a.out.with_suffix(".csv"), pd.DataFrame(found).to_csv(index=False).encode())
        runtime.atomic_write_bytes(a.out.with_suffix(".md"), text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
