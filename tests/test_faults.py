"""The fault sweep (issue #18): faults injected into real runs, then a plain rerun of the same command.

Each case starts `sgbench train-ff` (or `train-rnn`, `train-charlm`: the second half of the file) in a
child process with one fault armed (tests/fault_driver.py:
SIGKILL at a step, SIGKILL while a checkpoint or metrics.json is being written, SIGINT, a full disk
or a read-only folder simulated by a failing write), or damages a run folder (a corrupt or
truncated checkpoint, a truncated metrics.json), and checks:

* right after the fault, no partial file looks complete: metrics.json is absent or a finished,
  schema-valid run; a checkpoint is absent or loads; anything else is a dot-named temp file;
* a plain rerun of the same command completes, leaves no temp file or checkpoint, and its numbers
  equal an uninterrupted run's (feed-forward and diagnostics runs promise bit-identical resumes).

Steps at which to kill are drawn from a seeded generator (in the test ids), so a failure reproduces.

Marker `faults`. A plain `python -m pytest` (CI) runs the cheap share: one SIGKILL and one SIGINT
per run kind, every write fault, the damaged files and the divergence cases (about 1.5 minutes on
2 busy cores, and under a minute more for the RNN and char-LM cases). The full sweep adds the other
drawn steps, the RNN / char-LM methods not in the cheap share, a kill in the first checkpoint write or
in a diverged run's write, and the killed pipeline (several minutes):
`python -m pytest -m faults tests/test_faults.py`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_tiny_corpus

from sgbench import runtime
from sgbench.cli import main
from sgbench.families import get as get_family
from sgbench.families.feedforward.config import NON_RESULT_FIELDS
from sgbench.families.rnn.run import WindowTrainer

pytestmark = pytest.mark.faults


def full_sweep_only(request) -> None:
    """Cases of the full sweep run only when asked for by marker (-m faults), not in a plain run (CI)."""
    if "faults" not in (request.config.getoption("markexpr", "") or ""):
        pytest.skip("full fault sweep only: python -m pytest -m faults tests/test_faults.py")

DRIVER = Path(__file__).with_name("fault_driver.py")
ROOT = Path(__file__).resolve().parents[1]
ITERATIONS, EVAL_EVERY = 40, 10
# One seeded draw of kill steps per run kind: reproducible, and over the history of the suite every
# step gets hit as the seed is changed.
DRAW = random.Random(18)
FF_FLAGS = ["--dataset", "mnist", "--layers", "2", "--method", "dni", "--iterations", str(ITERATIONS),
            "--batch-size", "32", "--lr", "1e-3", "--eval-every", str(EVAL_EVERY), "--sg-hidden-layers", "1",
            "--sg-hidden-dim", "32", "--device", "cpu", "--threads", "1", "--tier", "smoke"]
DIAG_FLAGS = FF_FLAGS[:] + ["--probe-every", "10", "--probe-size", "32", "--dni-placement", "every_second",
                            "--warmup", "0.25"]
DIAG_FLAGS[DIAG_FLAGS.index("--layers") + 1] = "3"
KINDS = {"feedforward": FF_FLAGS, "diagnostics": DIAG_FLAGS}


def results(metrics: dict):
    """What a run computed (not when, where or how long, nor settings that change no number)."""
    curves = {k: v for k, v in metrics["curves"].items() if k != "elapsed_s"}
    config = {k: v for k, v in metrics["config"].items() if k not in NON_RESULT_FIELDS}
    return metrics["status"], curves, metrics["final"], config


def argv(kind: str, data_root, out) -> list[str]:
    return ["train-ff", *KINDS[kind], "--data-root", str(data_root), "--out", str(out), "--quiet"]


def run_with_fault(kind, data_root, out, fault: str, arg: str = "") -> subprocess.CompletedProcess:
    """`sgbench train-ff` in a child process with `fault` armed (see fault_driver.py)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(DRIVER), fault, arg, *argv(kind, data_root, out)],
                          capture_output=True, text=True, timeout=300, env=env)


def rerun(kind, data_root, out) -> dict:
    assert main(argv(kind, data_root, out)) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def straight(data_root, tmp_path_factory):
    """The uninterrupted run of each kind, for comparison."""
    runs = {}
    for kind in KINDS:
        out = tmp_path_factory.mktemp(f"straight-{kind}")
        assert main(argv(kind, data_root, out)) == 0
        runs[kind] = json.loads((out / "metrics.json").read_text())
    return runs


def assert_nothing_partial_looks_complete(out: Path, schema: str = "ff_metrics") -> None:
    """After a fault: metrics.json absent or finished and valid; checkpoint absent or loadable;
    everything else a dot-named temp file (or the run lock)."""
    if not out.exists():  # failed before writing anything: the run removed the folder it made
        return
    metrics = out / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())
        runtime.validate(m, schema)
        assert m["status"] in ("completed", "diverged")
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        torch.load(ckpt, weights_only=False)
    for f in out.iterdir():
        assert f.name in ("metrics.json", "checkpoint.pt", ".lock") or (
            f.name.startswith(".") and f.name.endswith(".tmp")), f


def assert_recovered(out: Path, got: dict, want: dict, resumed: bool, compare=results) -> None:
    assert compare(got) == compare(want)
    assert got["meta"]["resumed"] is resumed
    assert got["timing"]["wall_time_s"] >= got["timing"]["train_time_s"]
    assert sorted(f.name for f in out.iterdir()) == ["metrics.json"], list(out.iterdir())  # no .lock left


def signal_cases() -> list:
    """Per kind, three drawn steps for SIGKILL and SIGINT each: CI runs the latest of each (a resume),
    the full sweep all three."""
    cases = []
    for kind in KINDS:
        for signal_name in ("SIGKILL", "SIGINT"):
            for i, step in enumerate(sorted(DRAW.sample(range(1, ITERATIONS + 1), 3))):
                full = i != 2  # CI: the latest step (a resume)
                cases.append(pytest.param(kind, step, signal_name, full, id=f"{kind}-{signal_name}-step{step}"))
    return cases


@pytest.mark.parametrize("kind, step, signal_name, full", signal_cases())
def test_signal_at_a_step_then_rerun_equals_uninterrupted(kind, step, signal_name, full, data_root, tmp_path, straight,
                                                          request):
    if full:
        full_sweep_only(request)
    out = tmp_path / "run"
    proc = run_with_fault(kind, data_root, out, signal_name, str(step))
    if signal_name == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    else:  # the command line says how to go on
        assert proc.returncode == 130 and "rerun the same command" in proc.stderr, proc.stderr
    assert not (out / "metrics.json").exists()
    assert_nothing_partial_looks_complete(out)
    assert_recovered(out, rerun(kind, data_root, out), straight[kind], resumed=step > EVAL_EVERY)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name, nth", [("checkpoint.pt", 2), ("metrics.json", 1)])
def test_sigkill_during_a_write_leaves_no_half_file(kind, name, nth, data_root, tmp_path, straight):
    out = tmp_path / "run"
    proc = run_with_fault(kind, data_root, out, "SIGKILL-in-write", f"{name}:{nth}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    temps = list(out.glob(f".{name}.*.tmp"))
    assert len(temps) == 1 and not (out / "metrics.json").exists()  # the half file is a temp file only
    assert_nothing_partial_looks_complete(out)
    assert_recovered(out, rerun(kind, data_root, out), straight[kind], resumed=True)


@pytest.mark.parametrize("name, nth", [("checkpoint.pt", 3), ("metrics.json", 1)])
def test_full_disk_is_one_line_error_and_rerun_completes(name, nth, data_root, tmp_path, straight):
    out = tmp_path / "run"
    proc = run_with_fault("feedforward", data_root, out, "ENOSPC-in-write", f"{name}:{nth}")
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sgbench: error: cannot write") and "No space left" in last and "free some space" in last
    assert "Traceback" not in proc.stderr
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))  # the failed write cleaned up
    assert_nothing_partial_looks_complete(out)
    assert_recovered(out, rerun("feedforward", data_root, out), straight["feedforward"], resumed=True)


@pytest.mark.parametrize("family", ["feedforward", "rnn", "charlm"])
def test_full_disk_inside_torch_save_is_one_line_error_and_keeps_the_checkpoint(family, data_root, tmp_path, straight,
                                                                               seq_straight):
    """Issue #25 item 1: on a full disk torch.save raises its own RuntimeError ("unexpected pos"), not an
    OSError; every runner reports it as the one-line full-disk error, and the last checkpoint stays intact."""
    out = tmp_path / "run"
    if family == "feedforward":
        proc = run_with_fault(family, data_root, out, "ENOSPC-in-torch-save", "checkpoint.pt:2")
    else:
        proc = run_seq_with_fault(family, data_root, out, "ENOSPC-in-torch-save", "checkpoint.pt:2")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"sgbench: error: cannot write or read {out / 'checkpoint.pt'}: No space left on device; "
                    "free some space, then rerun the same command (it resumes)"), proc.stderr
    assert not list(out.glob(".*.tmp")) and not (out / "metrics.json").exists()
    schema = get_family(family).schema
    assert_nothing_partial_looks_complete(out, schema)
    first = torch.load(out / "checkpoint.pt", weights_only=False)  # the first checkpoint, intact
    assert (first["step"] == EVAL_EVERY) if family == "feedforward" else first["run"]["timestep"] > 0
    if family == "feedforward":
        assert_recovered(out, rerun(family, data_root, out), straight[family], resumed=True)
    else:
        assert_recovered(out, seq_rerun(family, data_root, out), seq_straight[family], True, seq_compare(family))


def test_read_only_folder_is_one_line_error_and_rerun_completes(data_root, tmp_path, straight):
    """Simulated (tests may run as root, whom permissions do not stop): every new file is refused."""
    out = tmp_path / "run"
    proc = run_with_fault("feedforward", data_root, out, "read-only", "")
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sgbench: error: cannot write") and "choose a folder you can write" in last
    assert "Traceback" not in proc.stderr
    assert not (out / "metrics.json").exists()
    assert_recovered(out, rerun("feedforward", data_root, out), straight["feedforward"], resumed=False)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_checkpoint_starts_afresh_and_equals_uninterrupted(damage, data_root, tmp_path, straight):
    out = tmp_path / "run"
    assert run_with_fault("feedforward", data_root, out, "SIGKILL", "25").returncode == -signal.SIGKILL
    ckpt = out / "checkpoint.pt"
    blob = ckpt.read_bytes()
    ckpt.write_bytes(b"not a checkpoint" if damage == "garbage" else blob[:len(blob) // 2])
    assert_recovered(out, rerun("feedforward", data_root, out), straight["feedforward"], resumed=False)


def test_truncated_metrics_is_retrained_not_skipped(data_root, tmp_path, straight):
    out = tmp_path / "run"
    assert main(argv("feedforward", data_root, out)) == 0
    path = out / "metrics.json"
    path.write_bytes(path.read_bytes()[:300])
    assert_recovered(out, rerun("feedforward", data_root, out), straight["feedforward"], resumed=False)


PIPELINE_TIER = """description: fault sweep, two feed-forward runs
feedforward:
  - dataset: [mnist]
    arch: [fcn]
    layers: [2]
    method: [backprop, dni]
    seed: [0]
    iterations: 400
    settings: {batch_size: 32, lr: 0.001, sg_hidden_layers: 1, sg_hidden_dim: 32, eval_every: 50}
"""


def snakemake(wf: Path, workdir: Path, env, *extra) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(wf / "Snakefile"), "--cores", "1", "--directory",
            str(workdir), "--config", "tier=smoke", *extra]


def pipeline_copy(tmp_path: Path) -> Path:
    """The workflow (with its default profile) and a tier of two short feed-forward runs."""
    import shutil
    wf = tmp_path / "wf"
    shutil.copytree(ROOT / "workflows", wf / "workflows")
    shutil.copy(ROOT / "Snakefile", wf)
    (wf / "profiles").symlink_to("workflows/profiles")
    (wf / "workflows" / "config" / "tiers" / "smoke.yaml").write_text(PIPELINE_TIER)
    return wf


def kill_pipeline_mid_run(wf, workdir, env, how: str) -> None:
    """Start the pipeline; once a run has a checkpoint, SIGKILL Snakemake and its jobs ("crash": a
    node or session lost) or send Snakemake SIGINT ("ctrl-c")."""
    import time
    proc = subprocess.Popen(snakemake(wf, workdir, env), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((workdir / "results" / "runs").glob("feedforward/smoke/*/checkpoint.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "the pipeline ended before a checkpoint"
        time.sleep(0.05)
    if how == "crash":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["crash", "ctrl-c"])
def test_killed_pipeline_reruns_to_the_uninterrupted_results(how, data_root, tmp_path, request):
    """A crash leaves Snakemake's lock: the documented `--unlock` then the plain rerun (docs/recovery.md);
    after Ctrl-C the plain rerun alone. The default profile reruns incomplete jobs; the killed run
    resumes from its checkpoint and equals a run never interrupted."""
    full_sweep_only(request)
    wf, workdir = pipeline_copy(tmp_path), tmp_path / "work"
    env = dict(os.environ, SGBENCH_DATA=str(data_root), SGBENCH_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    kill_pipeline_mid_run(wf, workdir, env, how)
    runs = workdir / "results" / "runs" / "feedforward" / "smoke"
    for folder in runs.iterdir():
        assert_nothing_partial_looks_complete(folder)
    if how == "crash":
        locked = subprocess.run(snakemake(wf, workdir, env), env=env, capture_output=True, text=True, timeout=600)
        assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
        assert subprocess.run(snakemake(wf, workdir, env, "--unlock"), env=env, capture_output=True).returncode == 0
    again = subprocess.run(snakemake(wf, workdir, env), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (workdir / "results" / "reports" / "smoke" / "REPORT.md").exists()
    resumed = []
    for folder in sorted(runs.iterdir()):
        got = json.loads((folder / "metrics.json").read_text())
        method = got["config"]["method"]
        straight = tmp_path / f"straight-{method}"
        flags = ["train-ff", "--method", method, "--layers", "2", "--iterations", "400", "--batch-size", "32",
                 "--lr", "0.001", "--sg-hidden-layers", "1", "--sg-hidden-dim", "32", "--eval-every", "50",
                 "--tier", "smoke", "--threads", "1", "--device", "cpu", "--data-root", str(data_root),
                 "--out", str(straight), "--quiet"]
        assert main(flags) == 0
        assert results(got) == results(json.loads((straight / "metrics.json").read_text()))
        assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
        resumed.append(got["meta"]["resumed"])
    if how == "crash":  # after Ctrl-C Snakemake may let a short job finish first: then nothing resumes
        assert any(resumed), "the killed run resumed from its checkpoint"


def test_stale_temp_files_are_removed_by_the_rerun(data_root, tmp_path, straight):
    out = tmp_path / "run"
    out.mkdir()
    for name in (".checkpoint.pt.abc123.tmp", ".metrics.json.xyz.tmp"):
        (out / name).write_bytes(b"half")
    assert_recovered(out, rerun("feedforward", data_root, out), straight["feedforward"], resumed=False)


def test_diverged_run_is_aggregated_with_its_status(data_root, tmp_path):
    """Item 1 in the pipeline: a diverged run no longer blocks aggregation; its table row says
    `diverged` and the Markdown names it (it counts as a result of its method, not a dropped seed)."""
    import pandas as pd
    paths = []
    for seed, lr in ((0, "1e-3"), (1, "1e12")):
        out = tmp_path / f"mnist-fcn2-dni-seed{seed}"
        flags = list(FF_FLAGS)
        flags[flags.index("--lr") + 1] = lr
        assert main(["train-ff", *flags, "--seed", str(seed), "--data-root", str(data_root), "--out", str(out),
                     "--quiet"]) == 0
        paths.append(str(out / "metrics.json"))
    assert main(["aggregate", "feedforward", *paths, "--tier", "smoke", "--out", str(tmp_path / "tables")]) == 0
    runs = pd.read_csv(tmp_path / "tables" / "feedforward_runs.csv")
    assert dict(zip(runs["seed"], runs["status"])) == {0: "completed", 1: "diverged"}
    table = (tmp_path / "tables" / "feedforward.md").read_text()
    assert "Diverged" in table and "mnist-fcn2-dni-seed1" in table and "(n=2)" in table


def test_every_snakemake_here_uses_the_safe_default_profile(tmp_path):
    """Item 6 without a kill (the killed pipeline is in the full sweep): a plain `snakemake` in the
    repository picks up profiles/default, which reruns incomplete jobs and keeps going."""
    import yaml
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert profile["rerun-incomplete"] is True and profile["keep-going"] is True
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--directory",
                          str(tmp_path), "--config", "tier=smoke"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Using workflow specific profile" in out.stdout + out.stderr and "profiles/default" in out.stdout + out.stderr



# ---------------------------------------------------------------- RNN and char-LM
# The same faults for `sgbench train-rnn` and `sgbench train-charlm`. Both train one window of T steps
# per update (sgbench.families.rnn.run.WindowTrainer), checkpoint at every logged point (RNN) or
# evaluation (char-LM), and promise a bit-exact resume: after a plain rerun every number in metrics.json
# equals the uninterrupted run's (all of it less timing, meta and the timed curve). A "step" here is a
# window: the fault fires as that window's update begins. The RNN runs checkpoint at every logged point
# (--checkpoint-every-s 0; by default they wait a minute between checkpoints).

SEQ_DRAW = random.Random(1818)
SEQ_FLAGS = {
    # dni_bpl carries the most state across windows (LSTM state, the λ-return's pending windows, the
    # streams, the curriculum); a threshold that lets the curriculum climb several levels in 600 steps;
    # a probe off the logging grid (every 90 steps, logs every 60).
    "rnn": ["train-rnn", "--task", "copy", "--method", "dni_bpl", "--T", "3", "--timesteps", "600",
            "--batch-size", "4", "--hidden-size", "16", "--log-points", "10", "--threshold", "20",
            "--curriculum-window", "10", "--probe-every", "90", "--device", "cpu", "--threads", "1",
            "--tier", "smoke", "--checkpoint-every-s", "0"],
    # a generated corpus in the data folder (helpers.write_tiny_corpus); dni_aux: the auxiliary head as well
    "charlm": ["train-charlm", "--corpus", "shakespeare-gutenberg", "--method", "dni_aux", "--T", "5",
               "--timesteps", "300", "--batch-size", "4", "--hidden-size", "16", "--embed-dim", "8",
               "--eval-every", "50", "--eval-chars", "2000", "--device", "cpu", "--threads", "1",
               "--tier", "smoke"],
}
SEQ_WINDOWS = {"rnn": (200, 20), "charlm": (60, 10)}  # windows per run, windows per checkpoint
# A huge lr drives the loss to NaN, or beyond runtime.ABSURD_LOSS times chance's, within a few windows:
# (extra flags, whether checkpoints come first).
SEQ_DIVERGE = {
    ("rnn", "before-first-checkpoint"): ["--lr", "1e30", "--sg-lr", "1e30"],  # the SG has its own rate
    ("rnn", "after-checkpoints"): ["--lr", "1e30", "--sg-lr", "1e30", "--timesteps", "60",
                                   "--log-points", "20"],  # log every window
    ("charlm", "before-first-checkpoint"): ["--lr", "1e30", "--clip", "0"],
    # lr 1e30 now stops at the first evaluation (an absurd validation bpc: runtime.ABSURD_LOSS); at 500 the
    # validation bpc climbs through seven logged points (2,119 ... 4,442) before it passes the bound at 40
    ("charlm", "after-checkpoints"): ["--lr", "500", "--clip", "0", "--timesteps", "50", "--eval-every", "5"],
}
# The child process: a SIGKILL or SIGINT as the n-th window begins (WindowTrainer.step, shared by both
# families); every other fault from tests/fault_driver.py.
SEQ_CHILD = """
import signal, sys
tests, fault, arg, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
sys.path.insert(0, tests)
import fault_driver
if fault in ("SIGKILL", "SIGINT"):
    from sgbench.cli import main
    from sgbench.families.rnn.run import WindowTrainer
    original, calls = WindowTrainer.step, [0]
    def step(self, *a, **k):
        calls[0] += 1
        if calls[0] == int(arg):
            fault_driver.kill(getattr(signal, fault))()
        return original(self, *a, **k)
    WindowTrainer.step = step
    sys.exit(main(args))
sys.argv = [fault_driver.__file__, fault, arg, *args]
sys.exit(fault_driver.main())
"""


def seq_argv(family: str, data_root, out, *extra: str) -> list[str]:
    root = ["--data-root", str(write_tiny_corpus(data_root))] if family == "charlm" else []
    return [*SEQ_FLAGS[family], *root, *extra, "--out", str(out), "--quiet"]


def seq_results(metrics: dict, family: str) -> dict:
    """Everything a run computed: metrics.json less timing, meta and the timed curve, and less the
    config fields that set no number."""
    non_result = get_family(family).non_result
    got = {k: v for k, v in metrics.items() if k not in ("timing", "meta")}
    got["curves"] = {k: v for k, v in metrics["curves"].items() if k != "elapsed_s"}
    got["config"] = {k: v for k, v in metrics["config"].items() if k not in non_result}
    return got


def seq_compare(family: str):
    return lambda metrics: seq_results(metrics, family)


def run_seq_with_fault(family, data_root, out, fault: str, arg: str = "", *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", SEQ_CHILD, str(DRIVER.parent), fault, arg,
                           *seq_argv(family, data_root, out, *extra)], check=False, capture_output=True, text=True,
                          timeout=300, env=env)


def seq_rerun(family, data_root, out, *extra) -> dict:
    assert main(seq_argv(family, data_root, out, *extra)) == 0
    return json.loads((out / "metrics.json").read_text())


@contextlib.contextmanager
def interrupted_at_window(monkeypatch, n: int):
    """In this process: Ctrl-C as the n-th window begins (the command returns 130, as after a real one)."""
    original, calls = WindowTrainer.step, [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(WindowTrainer, "step", step)
        yield


@pytest.fixture(scope="module")
def seq_straight(data_root, tmp_path_factory):
    """The uninterrupted run of each sequence family, for comparison."""
    return {family: seq_rerun(family, data_root, tmp_path_factory.mktemp(f"straight-{family}"))
            for family in SEQ_FLAGS}


def seq_signal_cases() -> list:
    """Per family, three drawn windows for SIGKILL and SIGINT each: CI runs the latest of each (a resume),
    the full sweep all three."""
    cases = []
    for family, (windows, _) in SEQ_WINDOWS.items():
        for signal_name in ("SIGKILL", "SIGINT"):
            for i, step in enumerate(sorted(SEQ_DRAW.sample(range(1, windows + 1), 3))):
                cases.append(pytest.param(family, step, signal_name, i != 2, id=f"{family}-{signal_name}-window{step}"))
    return cases


@pytest.mark.parametrize("family, step, signal_name, full", seq_signal_cases())
def test_sequence_signal_at_a_window_then_rerun_equals_uninterrupted(family, step, signal_name, full, data_root,
                                                                     tmp_path, seq_straight, request):
    if full:
        full_sweep_only(request)
    out = tmp_path / "run"
    proc = run_seq_with_fault(family, data_root, out, signal_name, str(step))
    if signal_name == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    else:
        assert proc.returncode == 130 and "rerun the same command to resume" in proc.stderr, proc.stderr
    assert not (out / "metrics.json").exists()
    assert_nothing_partial_looks_complete(out, get_family(family).schema)
    resumed = step > SEQ_WINDOWS[family][1]  # a checkpoint was written before the fault
    assert (out / "checkpoint.pt").exists() is resumed
    assert_recovered(out, seq_rerun(family, data_root, out), seq_straight[family], resumed, seq_compare(family))


@pytest.mark.parametrize("family", list(SEQ_FLAGS))
@pytest.mark.parametrize("name, nth", [("checkpoint.pt", 2), ("metrics.json", 1)])
def test_sequence_sigkill_during_a_write_leaves_no_half_file(family, name, nth, data_root, tmp_path, seq_straight):
    out = tmp_path / "run"
    proc = run_seq_with_fault(family, data_root, out, "SIGKILL-in-write", f"{name}:{nth}")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(list(out.glob(f".{name}.*.tmp"))) == 1 and not (out / "metrics.json").exists()
    assert_nothing_partial_looks_complete(out, get_family(family).schema)
    assert_recovered(out, seq_rerun(family, data_root, out), seq_straight[family], True, seq_compare(family))


@pytest.mark.parametrize("family", list(SEQ_FLAGS))
@pytest.mark.parametrize("name, nth", [("checkpoint.pt", 3), ("metrics.json", 1)])
def test_sequence_full_disk_is_one_line_error_and_rerun_completes(family, name, nth, data_root, tmp_path,
                                                                  seq_straight):
    out = tmp_path / "run"
    proc = run_seq_with_fault(family, data_root, out, "ENOSPC-in-write", f"{name}:{nth}")
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sgbench: error: cannot write") and "No space left" in last and "free some space" in last
    assert "Traceback" not in proc.stderr
    assert not list(out.glob(".*.tmp")) and not (out / "metrics.json").exists()
    assert_nothing_partial_looks_complete(out, get_family(family).schema)
    assert_recovered(out, seq_rerun(family, data_root, out), seq_straight[family], True, seq_compare(family))


@pytest.mark.parametrize("family", list(SEQ_FLAGS))
def test_sequence_read_only_folder_is_one_line_error_and_rerun_completes(family, data_root, tmp_path, seq_straight):
    out = tmp_path / "run"
    proc = run_seq_with_fault(family, data_root, out, "read-only")
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sgbench: error: cannot write") and "choose a folder you can write" in last
    assert "Traceback" not in proc.stderr
    assert list(out.iterdir()) == []
    assert_recovered(out, seq_rerun(family, data_root, out), seq_straight[family], False, seq_compare(family))


@pytest.mark.parametrize("family", list(SEQ_FLAGS))
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_sequence_damaged_checkpoint_starts_afresh_and_equals_uninterrupted(family, damage, data_root, tmp_path,
                                                                            seq_straight, monkeypatch):
    out = tmp_path / "run"
    with interrupted_at_window(monkeypatch, SEQ_WINDOWS[family][1] * 2 + 1):  # after the second checkpoint
        assert main(seq_argv(family, data_root, out)) == 130
    ckpt = out / "checkpoint.pt"
    blob = ckpt.read_bytes()
    ckpt.write_bytes(b"not a checkpoint" if damage == "garbage" else blob[:len(blob) // 2])
    assert_recovered(out, seq_rerun(family, data_root, out), seq_straight[family], False, seq_compare(family))


@pytest.mark.parametrize("family", list(SEQ_FLAGS))
def test_sequence_truncated_metrics_is_retrained_not_skipped(family, data_root, tmp_path, seq_straight):
    out = tmp_path / "run"
    out.mkdir()
    text = json.dumps(seq_straight[family], indent=1)
    (out / "metrics.json").write_text(text[:len(text) // 2])
    assert_recovered(out, seq_rerun(family, data_root, out), seq_straight[family], False, seq_compare(family))


@pytest.mark.parametrize("family", list(SEQ_FLAGS))
def test_sequence_stale_temp_files_are_removed_by_the_rerun(family, data_root, tmp_path, seq_straight):
    out = tmp_path / "run"
    out.mkdir()
    for name in (".checkpoint.pt.abc123.tmp", ".metrics.json.xyz.tmp"):
        (out / name).write_bytes(b"half")
    assert_recovered(out, seq_rerun(family, data_root, out), seq_straight[family], False, seq_compare(family))


@pytest.mark.parametrize("family, when", list(SEQ_DIVERGE))
def test_sequence_divergence_is_recorded_once_and_resumes_to_the_same_record(family, when, data_root, tmp_path,
                                                                             monkeypatch):
    """A NaN loss stops the run with a valid metrics.json (status diverged, where, the last finite values),
    no checkpoint left; a rerun skips it; a run interrupted before the NaN reruns to the same record."""
    extra = SEQ_DIVERGE[family, when]
    out = tmp_path / "straight"
    want = seq_rerun(family, data_root, out, *extra)
    runtime.validate(want, get_family(family).schema)
    assert want["status"] == "diverged" and sorted(f.name for f in out.iterdir()) == ["metrics.json"]
    logged, step = want["curves"]["timestep"], want["diverged"]["step"]
    if when == "after-checkpoints":
        assert logged and logged[-1] < step and want["diverged"]["last_finite"]
        assert all(math.isfinite(v) for v in want["diverged"]["last_finite"].values() if v is not None)
    else:
        assert logged == [] and want["diverged"]["last_finite"] == {}
    written = (out / "metrics.json").read_bytes()
    assert main(seq_argv(family, data_root, out, *extra)) == 0
    assert (out / "metrics.json").read_bytes() == written  # skipped, not retrained

    again = tmp_path / "interrupted"
    window = step // want["config"]["T"]  # the window whose loss is not finite
    with interrupted_at_window(monkeypatch, window):
        assert main(seq_argv(family, data_root, again, *extra)) == 130
    resumed = (again / "checkpoint.pt").exists()
    assert resumed is (when == "after-checkpoints")
    assert_recovered(again, seq_rerun(family, data_root, again, *extra), want, resumed, seq_compare(family))


@pytest.mark.parametrize("family", list(SEQ_FLAGS))
@pytest.mark.parametrize("method", ["bptt", "dni"])
def test_sequence_other_methods_resume_bit_exactly(family, method, data_root, tmp_path, request):
    """The other window trainers (truncation only; the one-window bootstrap) killed at a drawn window."""
    full_sweep_only(request)
    windows, every = SEQ_WINDOWS[family]
    step = random.Random(f"{family}-{method}").randrange(every + 1, windows + 1)
    extra = ["--method", method] + (["--probe-every", "0"] if family == "rnn" and method == "bptt" else [])
    want = seq_rerun(family, data_root, tmp_path / "straight", *extra)
    out = tmp_path / "run"
    proc = run_seq_with_fault(family, data_root, out, "SIGKILL", str(step), *extra)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert_nothing_partial_looks_complete(out, get_family(family).schema)
    got = seq_rerun(family, data_root, out, *extra)
    assert_recovered(out, got, want, True, seq_compare(family))


@pytest.mark.parametrize("family", list(SEQ_FLAGS))
def test_sequence_sigkill_in_the_first_checkpoint_write_starts_afresh(family, data_root, tmp_path, seq_straight,
                                                                     request):
    full_sweep_only(request)
    out = tmp_path / "run"
    proc = run_seq_with_fault(family, data_root, out, "SIGKILL-in-write", "checkpoint.pt:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "checkpoint.pt").exists() and len(list(out.glob(".checkpoint.pt.*.tmp"))) == 1
    assert_recovered(out, seq_rerun(family, data_root, out), seq_straight[family], False, seq_compare(family))


@pytest.mark.parametrize("family", list(SEQ_FLAGS))
def test_sequence_sigkill_while_writing_a_diverged_record(family, data_root, tmp_path, request):
    """Killed while writing the diverged run's metrics.json: the rerun resumes and diverges the same way."""
    full_sweep_only(request)
    extra = SEQ_DIVERGE[family, "after-checkpoints"]
    want = seq_rerun(family, data_root, tmp_path / "straight", *extra)
    out = tmp_path / "run"
    proc = run_seq_with_fault(family, data_root, out, "SIGKILL-in-write", "metrics.json:1", *extra)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "metrics.json").exists() and (out / "checkpoint.pt").exists()
    assert_recovered(out, seq_rerun(family, data_root, out, *extra), want, True, seq_compare(family))
