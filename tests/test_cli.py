"""The command line's first screen (issue #18, items 1, 2 and 8): one-line errors before any training,
finished runs skipped unless --force, a diverging run recorded, every flag explained."""
import json
import re
from pathlib import Path

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
    assert "holds a finished run of another config (differs in seed: 0 there, 1 here)" in one_error_line(capsys)
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


# ---------------------------------------------------------------- issue #25: bad input, third sweep
# Each case: one line naming the fix, exit 2, before any training, and nothing recorded (no run folder).
RUNNERS = {"train-ff": ["--iterations", "2"], "train-rnn": ["--timesteps", "30"],
           "train-charlm": ["--timesteps", "30"], "train-parallel": ["--iterations", "2"]}


@pytest.mark.parametrize("command", list(RUNNERS))
def test_threads_below_one_is_one_error_before_anything(command, tmp_path, capsys):
    """Item 3: `--threads -1` reached torch.set_num_threads ("expects a positive integer")."""
    out = tmp_path / "run"
    assert main([command, *RUNNERS[command], "--threads", "-1", "--device", "cpu", "--out", str(out)]) == 2
    want = ("threads must be >= 1 (per worker), got -1" if command == "train-parallel"
            else "threads must be >= 0 (0: torch's default), got -1")
    assert one_error_line(capsys) == f"sgbench: error: {want}"
    assert not out.exists()


def test_select_lr_threads_below_one_is_one_error(tmp_path, capsys):
    assert main(["select-lr", "--tier", "quick", "--threads", "0", "--out", str(tmp_path / "sel")]) == 2
    assert one_error_line(capsys) == "sgbench: error: --threads must be >= 1 (torch CPU threads per run), got 0"
    assert not (tmp_path / "sel").exists()


@pytest.mark.parametrize("command, flag, value", [
    ("train-ff", "--lr", "1e300"),             # overflowed float32 in Adam: "cannot be converted ... without overflow"
    ("train-ff", "--sg-scale", "-1e39"),
    ("train-ff", "--lr-milestones", "0.6,1e-50"),  # would round to 0 in float32
    ("train-rnn", "--lr", "1e300"),
    ("train-rnn", "--clip", "1e39"),
    ("train-charlm", "--lr", "1e300"),
    ("train-charlm", "--forget-bias", "1e-46"),
    ("train-parallel", "--lr", "1e300"),
])
def test_floats_outside_float32_are_one_error_before_anything(command, flag, value, tmp_path, capsys):
    """Item 4: every float setting ends up in a float32 tensor: its range is checked with the types."""
    out = tmp_path / "run"
    assert main([command, *RUNNERS[command], f"{flag}={value}", "--device", "cpu", "--out", str(out)]) == 2
    key = flag[2:].replace("-", "_")
    bad = value.split(",")[-1]
    assert one_error_line(capsys) == (f"sgbench: error: {key} ({flag}): {bad!r} is outside float32's range, which the "
                                      "run computes in (magnitudes 1.4e-45 to 3.4e+38, or 0); give a value in it")
    assert not out.exists()


def test_batch_larger_than_the_training_set_is_refused_naming_its_size(data_root, tmp_path, capsys):
    """Item 6: it trained at the set's size and recorded the batch asked for. The tiny MNIST has 512
    training images, 102 of them held out for validation: 410 train."""
    out = tmp_path / "run"
    assert train(data_root, out, "--batch-size", "100000") == 2
    assert one_error_line(capsys) == ("sgbench: error: batch_size 100,000 is larger than the training set: 410 mnist "
                                      "images left after the 102-image validation hold-out; use --batch-size 410 "
                                      "or less")
    assert not out.exists()
    assert train(data_root, out, "--batch-size", "64", "--train-limit", "50") == 2
    assert "50 mnist images left after the 102-image validation hold-out (--train-limit 50)" in one_error_line(capsys)
    assert train(data_root, out, "--batch-size", "410") == 0  # the whole set is a batch one may ask for
    assert json.loads((out / "metrics.json").read_text())["config"]["batch_size"] == 410


@pytest.mark.parametrize("command", ["train-ff", "train-charlm", "train-parallel"])
def test_a_run_failing_at_data_loading_leaves_no_folder(command, tmp_path, capsys):
    """Item 9: it left a run folder holding only `.lock` (a parallel run: and its attempt marker)."""
    out = tmp_path / "runs" / "new" / "run"
    assert main([command, *RUNNERS[command], "--device", "cpu", "--data-root", str(tmp_path / "nowhere"),
                 "--out", str(out), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_finished_run_folder_holds_no_lock_file(data_root, tmp_path):
    """Item 9: the zero-byte `.lock` stayed in every finished run folder."""
    assert train(data_root, tmp_path / "run") == 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json"]


def tables_of(tmp_path, tier: str, data_root) -> Path:
    """The feed-forward tables of one finished tiny run of `tier` (the other families: no runs)."""
    from sgbench.families import FAMILIES
    run = tmp_path / "run"
    assert train(data_root, run, "--tier", tier) == 0
    tables = tmp_path / "tables"
    for family in FAMILIES:
        files = [str(run / "metrics.json")] if family.name == "feedforward" else []
        assert main(["aggregate", family.name, *files, "--tier", tier, "--out", str(tables)]) == 0
    return tables


@pytest.mark.parametrize("make", ["missing", "empty", "no runs tables"])
def test_report_refuses_a_tables_folder_without_tables(make, tmp_path, capsys):
    """Item 7: it wrote a complete-looking REPORT.md in which every verdict was "no cell"."""
    tables = tmp_path / "tables"
    if make != "missing":
        tables.mkdir()
    if make == "no runs tables":
        (tables / "notes.md").write_text("not a table\n")
    out = tmp_path / "REPORT.md"
    assert main(["report", "--tier", "quick", "--tables", str(tables), "--figures", str(tmp_path / "f"),
                 "--out", str(out)]) == 2
    err = one_error_line(capsys)
    assert (f"--tables {tables}: no such folder" in err if make == "missing"
            else f"--tables {tables}: holds none of the runs tables (feedforward_runs.csv, " in err)
    assert not out.exists()


def test_report_checks_the_tier_against_the_tables(data_root, tmp_path, capsys):
    """Item 8: `--tier foo` over the smoke tables labelled them tier foo."""
    tables = tables_of(tmp_path, "smoke", data_root)
    out = tmp_path / "REPORT.md"
    flags = ["--tables", str(tables), "--figures", str(tmp_path / "f"), "--out", str(out)]
    capsys.readouterr()
    assert main(["report", "--tier", "foo", *flags]) == 2
    assert one_error_line(capsys) == (f"sgbench: error: --tier foo: the tables in {tables} hold runs of tier smoke; "
                                      "use --tier smoke, or give that tier's tables")
    assert not out.exists()
    assert main(["report", "--tier", "smoke", *flags]) == 0 and "Tier" in out.read_text()


def test_flag_docs_are_generated_from_the_config_classes():
    """Item 10: docs/flags.md lists every flag with the default `--help` shows (the same function makes both)."""
    from sgbench.cli import FLAG_DOCS, flag_docs
    assert FLAG_DOCS.read_text() == flag_docs(), (
        "docs/flags.md is stale: python -c \"from sgbench.cli import write_flag_docs; write_flag_docs()\"")


# How docs/runs.md states a flag's default in its prose: each pattern gives (flag, the default it claims).
DEFAULT_CLAIMS = [
    r"`(--[a-z][a-z-]*) ([^`|]+)` \(default[);:]",                  # `--device auto` (default)
    r"`(--[a-z][a-z-]*) [^`]*\|[^`]*` \(default `([^`]+)`",           # `--step a|b|c` (default `eager`
    r"\(`(--[a-z][a-z-]*)`[^)]*\)\.?\*?\*?:? `([^`]+)` \(default[);:]",  # (`--layout`, ...): `paper` (default;
    r"`(--[a-z][a-z-]*)`,? \(?default ([0-9][^,;)]*)",                # `--microbatches`, default 4
    r"\(`(--[a-z][a-z-]*)`\)\.\*\*[^`]*`([^`]+)` \(default\)",        # (`--late-sg`).** ... `reevaluate` (default)
    r"`(--[a-z][a-z-]*)`(?: γ)? \(([0-9.]+),",                        # `--sg-scale` (0.1, ...
]
SECTION_COMMANDS = {"One run": ["train-ff"], "Complete unlock": ["train-ff"],
                    "RNN runs": ["train-rnn", "train-charlm"], "Parallel workers": ["train-parallel"]}


def same_value(claimed: str, default: str) -> bool:
    claimed = claimed.strip().removesuffix("%").strip()
    try:
        return float(claimed) == float(default)
    except ValueError:
        return claimed == default


def test_defaults_stated_in_runs_md_are_the_parsers():
    """Item 10: docs/runs.md said `--step` defaults to `auto`; the code and --help say `eager`."""
    from pathlib import Path

    from sgbench.cli import config_flags
    from sgbench.families import commands
    defaults = {c: {flag: default for _, flag, default, _, _ in config_flags(f.config_class())}
                for c, f in commands().items()}
    text = (Path(__file__).resolve().parents[1] / "docs" / "runs.md").read_text()
    checked, wrong = [], []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        title = next((t for t in SECTION_COMMANDS if section.startswith(t)), None)
        assert title, f"docs/runs.md section {section.splitlines()[0]!r}: name its command in SECTION_COMMANDS"
        for pattern in DEFAULT_CLAIMS:
            for m in re.finditer(pattern, section):
                flag, claimed = m.groups()
                command = next(c for c in SECTION_COMMANDS[title] if flag in defaults[c])
                checked.append(flag)
                if not same_value(claimed, defaults[command][flag].split(",")[0]):
                    wrong.append(f"{flag}: docs/runs.md says {claimed!r}, {command} --help says {defaults[command][flag]!r}")
    assert not wrong, wrong
    assert len(checked) >= 10, checked  # the patterns still find the docs' claims
