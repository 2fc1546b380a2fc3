"""Collect metrics.json files into tidy tables (the Table 1 layout of [DNI]).

A file that is malformed, incomplete or not schema-valid is an error naming that file:
a grid with a broken run must not silently report fewer seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pandas as pd

from . import runio
from .models import METHODS

TABLE_ROWS = ["dataset", "arch", "layers"]


class MetricsError(ValueError):
    pass


def read_metrics(path: Path) -> dict:
    try:
        metrics = json.loads(Path(path).read_text())
        runio.validate(metrics, "ff_metrics")
    except (OSError, json.JSONDecodeError) as e:
        raise MetricsError(f"{path}: cannot read metrics ({e}); rerun that run") from e
    except jsonschema.ValidationError as e:
        raise MetricsError(f"{path}: not a complete sgbench metrics file ({e.message}); rerun that run") from e
    return metrics


def collect_ff(paths) -> pd.DataFrame:
    """One row per run: what was run, where, and what it measured."""
    rows = []
    for path in paths:
        m = read_metrics(path)
        c = m["config"]
        rows.append({
            "dataset": m["dataset"]["variant"], "arch": c["arch"], "layers": c["layers"], "method": c["method"],
            "seed": c["seed"], "tier": m["tier"], "iterations": c["iterations"], "lr": c["lr"],
            "test_error": m["final"]["test_error"], "steps_per_s": m["timing"]["steps_per_s"],
            "device": m["meta"]["device"], "path": str(path),
        })
    if not rows:
        raise MetricsError("no metrics files given")
    return pd.DataFrame(rows)


def ff_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows (dataset, arch, layers), one column per method: 'mean ± std (n)' of final test error (%)."""
    def cell(errors: pd.Series) -> str:
        if len(errors) == 1:
            return f"{errors.iloc[0]:.2f} (n=1)"
        return f"{errors.mean():.2f} ± {errors.std(ddof=1):.2f} (n={len(errors)})"

    table = runs.groupby(TABLE_ROWS + ["method"])["test_error"].apply(cell).unstack("method")
    return table[[m for m in METHODS if m in table.columns]].reset_index()


def write_ff_summary(paths, out_md: Path, out_csv: Path) -> pd.DataFrame:
    runs = collect_ff(paths).sort_values(TABLE_ROWS + ["method", "seed"])
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    runio.atomic_write_bytes(out_csv, runs.to_csv(index=False).encode())
    tiers = ", ".join(sorted(runs["tier"].unique()))
    budget = ", ".join(f"{i} iterations" for i in sorted(runs["iterations"].unique()))
    devices = ", ".join(sorted(runs["device"].unique()))
    text = (f"# Feed-forward runs: final test error (%)\n\n"
            f"Tier: {tiers}. Budget: {budget}. Device: {devices}. Mean ± sample std over seeds (n runs).\n"
            f"Reference numbers ([DNI] Table 1) are after 500k iterations; a shorter tier is not that replication.\n\n"
            + ff_table(runs).to_markdown(index=False) + "\n")
    runio.atomic_write_bytes(out_md, text.encode())
    return runs
