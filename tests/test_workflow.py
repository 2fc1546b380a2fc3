"""The Snakemake grid: every tier resolves, lint is clean, the smoke tier runs end to end."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_learnable_mnist

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def snakemake(*args, cwd, env=None):
    return subprocess.run(SNAKEMAKE + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("tier", ["smoke", "quick", "paper"])
def test_every_tier_resolves(tier, tmp_path):
    out = snakemake("-n", "--directory", str(tmp_path), "--config", f"tier={tier}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "train_ff" in out.stdout


def test_lint_is_clean():
    out = snakemake("--lint", cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bad_config_is_refused_with_its_name(tmp_path):
    out = snakemake("-n", "--directory", str(tmp_path), "--config", "tier=huge", cwd=tmp_path)
    assert out.returncode != 0 and "'huge' is not one of" in out.stdout + out.stderr


def test_download_flag_reaches_the_jobs(tmp_path):
    out = snakemake("-n", "-p", "--directory", str(tmp_path), "--config", "tier=smoke", "download=true", cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "sgbench prepare-data --dataset mnist --download" in out.stdout


def test_bad_grid_value_is_refused_before_running(tmp_path):
    """A grid setting sgbench does not know is caught when the DAG is built, not mid-run."""
    tiers = tmp_path / "wf" / "workflows" / "config" / "tiers"
    shutil.copytree(ROOT / "workflows", tmp_path / "wf" / "workflows")
    shutil.copy(ROOT / "Snakefile", tmp_path / "wf")
    text = (tiers / "smoke.yaml").read_text().replace("lr: 0.001", "learning_rate: 0.001")
    (tiers / "smoke.yaml").write_text(text)
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(tmp_path / "wf" / "Snakefile"), "-n",
                          "--directory", str(tmp_path), "--config", "tier=smoke"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "unknown config key(s) ['learning_rate']" in out.stdout + out.stderr


def test_smoke_tier_runs_end_to_end(tmp_path):
    data = write_learnable_mnist(tmp_path / "data")
    env = dict(os.environ, SGBENCH_DATA=str(data), SGBENCH_CACHE=str(tmp_path / "cache"))
    out = snakemake("--cores", "2", "--directory", str(tmp_path), "--config", "tier=smoke", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "results" / "tables" / "smoke" / "feedforward.md").read_text()
    for method in ("backprop", "dni", "cdni", "no_bprop"):
        assert method in table
    runs = sorted((tmp_path / "results" / "runs" / "feedforward" / "smoke").glob("*/metrics.json"))
    assert len(runs) == 4
    assert all((tmp_path / "logs" / "train_ff" / "smoke" / f"{r.parent.name}.log").exists() for r in runs)
