"""The command line's first screen (issue #18, items 1, 2 and 8): one-line errors before any training,
finished runs skipped unless --force, a diverging run recorded, every flag explained."""
import json
import re

import pytest
import torch

from sgbench import runtime
from sgbench.cli import main

TINY = ["--dataset", "mnist", "--layers", "2", "--method", "dni", "--iterations", "8", "--batch-size", "16",
        "--lr", "1e-3", "--eval-every", "4", "--sg-hidden-layers", "1", "--sg-hidden-dim", "16", "--device", "cpu",
        "--threads", "1"]


def train(data_root, out, *extra) -> int:
    return main(["train-ff", *TINY, "--data-root", str(data_root), "--out", str(out), "--quiet", *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("sgbench: error: ")
    return err


def test_broken_yaml_is_one_error_naming_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("iterations: 10\nlr: [0.1\n")
    assert main(["train-ff", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert re.search(r"--config .*run\.yaml: not valid YAML at line \d+", one_error_line(capsys))


def test_broken_json_config_is_one_error(tmp_path, capsys):
    cfg = tmp_path / "run.json"
    cfg.write_text('{"iterations": 10,')
    assert main(["train-ff", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert "not valid JSON at line 1" in one_error_line(capsys)


def test_out_naming_a_file_is_one_error(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert main(["train-ff", "--iterations", "2", "--out", str(tmp_path / "taken")]) == 2
    assert "is a file; give a folder" in one_error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_error_before_any_data_is_read(tmp_path, capsys):
    """The data root does not exist: the device error must come first (nothing is loaded)."""
    assert main(["train-ff", "--device", "cuda", "--data-root", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "CUDA is not available here; use --device auto or cpu" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--iterations", "20.5"], "iterations (--iterations): expected a whole number, got '20.5'"),
    (["--lr", "fast"], "lr (--lr): expected a number, got 'fast'"),
])
def test_bad_flag_types_are_one_error(tmp_path, capsys, flags, message):
    assert main(["train-ff", *flags, "--out", str(tmp_path / "run")]) == 2
    assert message in one_error_line(capsys)


def test_yaml_exponent_without_dot_is_read_as_a_number(data_root, tmp_path):
    """PyYAML reads `lr: 1e-4` as text; it used to end in a TypeError traceback."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"lr: 1e-4\niterations: 8.0\nbatch_size: 16\nlayers: 2\ndevice: cpu\ndata_root: {data_root}\n"
                   "eval_every: 4\nsg_hidden_layers: 1\nsg_hidden_dim: 16\n")
    assert main(["train-ff", "--config", str(cfg), "--out", str(tmp_path / "file"), "--quiet"]) == 0
    config = json.loads((tmp_path / "file" / "metrics.json").read_text())["config"]
    assert config["lr"] == 1e-4 and config["iterations"] == 8


def test_finished_run_is_skipped_unless_force(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(data_root, out) == 0
    first = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert train(data_root, out) == 0
    assert "already holds this run (status completed); skipped" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == first
    assert train(data_root, out, "--force") == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["meta"]["started_at"] >= json.loads(first)["meta"]["started_at"]
    assert again["curves"]["test_error"] == json.loads(first)["curves"]["test_error"]


def test_finished_run_of_another_config_is_not_overwritten(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(data_root, out) == 0
    before = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert train(data_root, out, "--seed", "1") == 2
    assert "holds a finished run of another config (differs in seed)" in one_error_line(capsys)
    assert (out / "metrics.json").read_bytes() == before


def test_diverging_run_is_recorded_and_not_retrained(data_root, tmp_path, capsys):
    """Issue #18 item 1: lr 1e12 gives NaN within a few steps. The run stops there, writes a valid
    metrics.json (status diverged, no NaN in the JSON), removes its checkpoint, and the rerun skips it."""
    out = tmp_path / "div"
    argv = ["--lr", "1e12", "--iterations", "100", "--eval-every", "20"]
    assert train(data_root, out, *argv) == 0
    text = (out / "metrics.json").read_text()
    m = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    runtime.validate(m, "ff_metrics")
    assert m["status"] == "diverged" and 1 <= m["diverged"]["step"] < 100
    assert m["final"]["train_loss"] is None and 0 <= m["final"]["test_error"] <= 100
    assert all(s < m["diverged"]["step"] for s in m["curves"]["step"])  # curves up to there, all finite
    assert all(v is not None for v in m["curves"]["train_loss"])
    assert not (out / "checkpoint.pt").exists()
    capsys.readouterr()
    assert train(data_root, out, *argv) == 0
    assert "status diverged); skipped" in capsys.readouterr().err


def test_resumed_run_says_so_and_counts_every_attempts_wall_time(data_root, tmp_path):
    from helpers import tiny_ff_config

    from sgbench.families.feedforward.run import RunInterrupted, train_ff
    with pytest.raises(RunInterrupted):
        train_ff(tiny_ff_config(data_root), tmp_path, _stop_after=20)
    m = train_ff(tiny_ff_config(data_root), tmp_path)
    assert m["meta"]["resumed"] is True
    assert m["timing"]["wall_time_s"] >= m["timing"]["train_time_s"] > 0
    fresh = train_ff(tiny_ff_config(data_root), tmp_path / "fresh")
    assert fresh["meta"]["resumed"] is False


@pytest.mark.parametrize("command", ["train-ff", "train-rnn", "train-parallel"])
def test_every_flag_is_explained(command, capsys):
    """Each config flag's help says what it does, not only its default."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    entries = re.findall(r"^  (--[a-z-]+)(?: [A-Z_]+)?\s*(.*?)(?=^  -|\Z)", text.split("options:")[1], re.M | re.S)
    bare = [flag for flag, help_text in entries if " ".join(help_text.split()).startswith("default:")]
    assert len(entries) > 10 and not bare, bare


def test_train_ff_help_shows_a_quick_trial(capsys):
    with pytest.raises(SystemExit):
        main(["train-ff", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "500,000 iterations" in text and "quick trial" in text and "--iterations 300" in text


def test_report_dependency_comes_with_the_pipeline(tmp_path):
    """`snakemake --report` needs pygments (snakemake's `reports` extra); before, only the test extra brought it."""
    import tomllib
    from pathlib import Path
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    with_snakemake = [deps for deps in [project["dependencies"], *extras.values()]
                      if any(d.startswith("snakemake>") or d.startswith("snakemake[") for d in deps)]
    assert with_snakemake and all(any(d.startswith("pygments") or d.startswith("snakemake[reports") for d in deps)
                                  for deps in with_snakemake)


def test_report_of_a_tier_not_run_names_the_tiers_that_ran(tmp_path):
    """After a smoke run, `snakemake --report` (default tier quick) used to fail with "results/REPORT.md
    marked for report but does not exist"; now it names the tier to ask for."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "results" / "reports" / "smoke").mkdir(parents=True)
    (tmp_path / "results" / "reports" / "smoke" / "REPORT.md").write_text("# report\n")
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "--directory",
                          str(tmp_path), "--report", str(tmp_path / "report.html")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "tier 'quick' has no report yet" in text and "--config tier=smoke" in text


def test_aggregate_removes_temp_files_a_killed_attempt_left(tmp_path):
    """Only its own family's: another family's aggregate job may be writing into the same folder."""
    out = tmp_path / "tables"
    out.mkdir()
    mine, theirs = out / ".feedforward.md.k2j3.tmp", out / ".rnn.md.x9.tmp"
    mine.write_text("half"), theirs.write_text("half")
    assert main(["aggregate", "feedforward", "--tier", "smoke", "--out", str(out)]) == 0
    assert not mine.exists() and theirs.exists() and (out / "feedforward.md").exists()
