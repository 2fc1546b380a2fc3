"""The Snakemake pipeline: every tier resolves, lint is clean, bad configs are refused, the SLURM
profile parses, and the smoke tier runs end to end into every table, figure and report."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import write_learnable_mnist, write_tiny_corpus

from sgbench.families import FAMILIES, grid

ROOT = Path(__file__).resolve().parents[1]
RULES = ("prepare_data", *(f"{stage}_{f.name}" for stage in ("train", "aggregate", "figures") for f in FAMILIES),
         "report")


def snakemake(*args, cwd, env=None, snakefile=ROOT / "Snakefile"):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(snakefile), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def copy_workflow(tmp_path: Path) -> Path:
    """A copy of the Snakefile and workflows/ whose tier files a test may edit; returns its Snakefile."""
    shutil.copytree(ROOT / "workflows", tmp_path / "wf" / "workflows")
    shutil.copy(ROOT / "Snakefile", tmp_path / "wf")
    return tmp_path / "wf" / "Snakefile"


@pytest.mark.parametrize("tier", ["smoke", "quick", "paper"])
def test_every_tier_resolves(tier, tmp_path):
    out = snakemake("-n", "--directory", str(tmp_path), "--config", f"tier={tier}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    for rule in RULES:
        assert f"rule {rule}:" in out.stdout, rule
    report_md = "results/REPORT.md" if tier == "quick" else f"results/reports/{tier}/REPORT.md"
    assert report_md in out.stdout


def test_rnn_tier_runs_copy_past_the_ceiling(tmp_path):
    """Issue #24 item 4: the rnn tier trains only RNN runs, copy at T = 2..5 with 3 seeds each, BPTT, DNI and
    DNI + Aux at every T (BP(λ) at T = 4), at least 100k time steps per stream, LSTM 256 (the set-up
    study's best), and reports into its own REPORT.md."""
    out = snakemake("-n", "--directory", str(tmp_path), "--config", "tier=rnn", cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    trained = {line.split()[0] for line in out.stdout.splitlines() if line.startswith("train_")}
    assert trained == {"train_rnn"}
    assert "results/reports/rnn/REPORT.md" in out.stdout
    runs = grid.expand(yaml.safe_load((ROOT / "workflows/config/tiers/rnn.yaml").read_text()), "rnn")["rnn"]
    cells = {(c.T, c.method): set() for c in runs.values()}
    for c in runs.values():
        assert (c.task, c.hidden_size, c.tier) == ("copy", 256, "rnn") and c.timesteps >= 100_000, c
        cells[(c.T, c.method)].add(c.seed)
    expected = {(T, m) for T in (2, 3, 4, 5) for m in ("bptt", "dni", "dni_aux")} | {(4, "dni_bpl")}
    assert set(cells) == expected and all(seeds == {0, 1, 2} for seeds in cells.values())


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


@pytest.mark.parametrize("old, new, message", [
    ("lr: 0.001", "learning_rate: 0.001", "unknown config key(s) ['learning_rate']"),   # checked by sgbench
    ("method: [dni]", "method: [sgd]", "'sgd' is not one of"),                          # checked by the schema
    ("iterations: 60", "iterations: -5", "-5 is less than the minimum of 1"),
    ("settings: {hidden_size: 32}", "settings: {hidden_size: 0}", "hidden_size and sg_hidden_dim must be >= 1"),
])
def test_bad_grid_value_is_refused_before_running(tmp_path, old, new, message):
    """A bad grid value is caught when the DAG is built, not mid-run, with a message naming it."""
    snakefile = copy_workflow(tmp_path)
    tier_file = tmp_path / "wf" / "workflows" / "config" / "tiers" / "smoke.yaml"
    text = tier_file.read_text()
    assert old in text
    tier_file.write_text(text.replace(old, new, 1))
    out = snakemake("-n", "--directory", str(tmp_path), "--config", "tier=smoke", cwd=tmp_path, snakefile=snakefile)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr and "smoke.yaml" in out.stdout + out.stderr


def test_a_run_defined_twice_differently_is_refused(tmp_path):
    snakefile = copy_workflow(tmp_path)
    tier_file = tmp_path / "wf" / "workflows" / "config" / "tiers" / "smoke.yaml"
    text = tier_file.read_text().replace("update_prob: [0.5]", "update_prob: [1.0]")
    second = "    iterations: 60\n    settings: *tiny"
    tier_file.write_text(text.replace(second, second.replace("60", "70")))
    out = snakemake("-n", "--directory", str(tmp_path), "--config", "tier=smoke", cwd=tmp_path, snakefile=snakefile)
    assert out.returncode != 0 and "define run mnist-fcn2-dni-seed0 differently" in out.stdout + out.stderr


def test_explicit_defaults_name_the_same_run(tmp_path):
    """A grid that spells out a default (the paper's SG hidden layers for FCN DNI, warm-up 0) adds no run:
    run names come from the resolved config, so the pipeline trains each config once."""
    def train_jobs(snakefile):
        out = snakemake("-n", "--directory", str(tmp_path), "--config", "tier=smoke", cwd=tmp_path,
                        snakefile=snakefile)
        assert out.returncode == 0, out.stderr + out.stdout
        return sorted(line.split("/")[-2] for line in out.stdout.splitlines()
                      if line.strip().startswith("output: results/runs/diagnostics/"))

    before = train_jobs(ROOT / "Snakefile")
    snakefile = copy_workflow(tmp_path)
    tier_file = tmp_path / "wf" / "workflows" / "config" / "tiers" / "smoke.yaml"
    text = tier_file.read_text()
    for old, new in (("sg_hidden_layers: [0]", "sg_hidden_layers: [0, 2]"), ("warmup: [0.5]", "warmup: [0.0, 0.5]")):
        assert old in text
        text = text.replace(old, new)
    tier_file.write_text(text)
    assert train_jobs(snakefile) == before and len(before) == 4
    assert "mnist-fcn3-dni-seed0" in before and not any("sgh2" in name or "-w0-" in name for name in before)


@pytest.mark.parametrize("tier, gpus", [("paper", 1), ("smoke", 0)])
def test_slurm_profile_gives_training_jobs_the_tiers_gpus(tmp_path, tier, gpus):
    """The paper tier's training jobs ask for a GPU each (gpus_per_run: 1), the CPU tiers' for none;
    every job has memory and a time limit (the plugin passes no --mem without mem_mb)."""
    out = snakemake("-n", "--profile", str(ROOT / "workflows" / "profiles" / "slurm"), "--directory", str(tmp_path),
                    "--config", f"tier={tier}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    jobs = out.stdout.split("\n\n")
    for rule in RULES:
        resources = next(j for j in jobs if f"rule {rule}:" in j).split("resources:")[1].splitlines()[0]
        assert ("gpu=" in resources) == (gpus > 0 and rule.startswith("train_")), (rule, resources)
        if "gpu=" in resources:  # a run on K workers: one GPU per worker
            asked = int(resources.split("gpu=")[1].split(",")[0])
            assert asked == gpus if rule != "train_parallel" else asked % gpus == 0 and asked >= gpus, (rule, resources)
        assert "runtime=" in resources and "mem_mb=" in resources


def test_smoke_tier_runs_end_to_end(tmp_path):
    """Every family, table, figure and the report; then the Snakemake HTML report of the same run."""
    data = write_tiny_corpus(write_learnable_mnist(tmp_path / "data"))
    env = dict(os.environ, SGBENCH_DATA=str(data), SGBENCH_CACHE=str(tmp_path / "cache"))
    out = snakemake("--cores", "2", "--directory", str(tmp_path), "--config", "tier=smoke", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    results = tmp_path / "results"
    for family in FAMILIES:
        for name in family.outputs.values():
            assert (results / "tables" / "smoke" / name).stat().st_size > 0, name
    table = (results / "tables" / "smoke" / "feedforward.md").read_text()
    for method in ("backprop", "dni", "cdni", "no_bprop"):
        assert method in table
    assert "Tier: **smoke**" in table and "mnist" in table
    unlock = pd.read_csv(results / "tables" / "smoke" / "unlock.csv")
    assert {"unlock", "cunlock"} <= set(unlock["method"]) and set(unlock["update_prob"]) == {0.5, 1.0}
    assert len(pd.read_csv(results / "tables" / "smoke" / "rnn_runs.csv")) == 3
    assert set(pd.read_csv(results / "tables" / "smoke" / "charlm_runs.csv")["corpus"]) == {"shakespeare-gutenberg"}
    for family in FAMILIES:
        for name in family.figures:
            for suffix in (".png", ".pdf"):
                assert (results / "figures" / "smoke" / f"{name}{suffix}").stat().st_size > 1000, name
    text = (results / "reports" / "smoke" / "REPORT.md").read_text()
    assert "Tier smoke: not the paper-scale replication" in text
    for claim in ("F1", "F2", "F3", "F4", "R1", "R2", "R3", "C1", "U1", "A1", "P1", "P2"):
        assert f"| {claim} |" in text
    parallel_runs = pd.read_csv(results / "tables" / "smoke" / "parallel_runs.csv")
    assert sorted(zip(parallel_runs["method"], parallel_runs["workers"])) == [
        ("backprop", 1), ("backprop", 2), ("cdni", 1), ("cdni", 2), ("ddp_split", 2), ("gpipe", 2)]
    diagnostics = (results / "tables" / "smoke" / "diagnostics.md").read_text()
    assert "dni, middle (1 DNIs)" in diagnostics and "w = 50 %" in diagnostics and "d = 3" in diagnostics
    assert "D1 fidelity vs depth** (mnist FCN-3" in text
    assert len(list((results / "runs" / "diagnostics" / "smoke").glob("*/metrics.json"))) == 4
    runs = sorted((results / "runs" / "feedforward" / "smoke").glob("*/metrics.json"))
    assert len(runs) == 7
    assert all((tmp_path / "logs" / "train_feedforward" / "smoke" / f"{r.parent.name}.log").exists() for r in runs)

    html = snakemake("--directory", str(tmp_path), "--config", "tier=smoke", "--report", "report.html",
                     cwd=tmp_path, env=env)
    assert html.returncode == 0, html.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 100_000
