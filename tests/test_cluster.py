"""The SLURM profile on a real SLURM cluster: tests/cluster/local_slurm.sh brings up a one-node
cluster on this machine (Debian's slurmctld, slurmd, munge), runs the smoke tier through it with
workflows/profiles/slurm, runs a job that fails, compares the numbers with a local run and stops
every daemon it started. Needs root on Debian 12, as CI's machine is; skipped elsewhere, unless
SGBENCH_REQUIRE_CLUSTER is set (.ci/run sets it), which turns the skip into a failure."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import write_learnable_mnist, write_tiny_corpus

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "cluster" / "local_slurm.sh"
sys.path.insert(0, str(SCRIPT.parent))
import compare_runs  # noqa: E402  (tests/cluster/compare_runs.py)

DAEMONS = ("munged", "slurmctld", "slurmd", "slurmstepd")
MARK = "# One-node test cluster written by tests/cluster/local_slurm.sh"

pytestmark = pytest.mark.cluster


def why_no_cluster() -> str | None:
    """Why this machine cannot run the local cluster, or None."""
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (it installs Debian packages and starts daemons)"
    release = Path("/etc/os-release")
    fields = dict(line.split("=", 1) for line in release.read_text().splitlines() if "=" in line) if release.exists() else {}
    if fields.get("ID", "").strip('"') != "debian" or fields.get("VERSION_ID", "").strip('"') != "12":
        return f"the local SLURM cluster needs Debian 12, not {fields.get('PRETTY_NAME', 'this OS').strip(chr(34))}"
    installed = all(shutil.which(p) for p in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def script_env(data: Path) -> dict:
    """This interpreter, its scripts (sgbench) on PATH, and the test data."""
    env = dict(os.environ, SGBENCH_DATA=str(data), PYTHON=sys.executable)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def processes() -> list[tuple[int, str, str, str]]:
    """(pid, name, command line, working directory) of every process on this machine."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:  # exited meanwhile, or a kernel thread
            continue
        out.append((int(proc.name), name, cmdline, cwd))
    return out


def assert_nothing_left(work: Path):
    """No daemon of the test cluster, no job and no snakemake run of it is left, nor its files."""
    daemons = [line.split() for line in (work / "cluster" / "daemons").read_text().splitlines()]
    assert [name for name, _ in daemons] == ["munged", "slurmctld", "slurmd"]
    left = [(pid, name, cmd) for pid, name, cmd, cwd in processes()
            if name in DAEMONS[1:] or str(work) in cmd or cwd.startswith(str(work))
            or pid in {int(p) for _, p in daemons}]
    assert not left, f"left running: {left}"
    assert not list((work / "cluster").rglob("*.pid")), "pid files left"
    munge_run = Path((work / "cluster" / "munge-run-dir").read_text().strip())
    assert munge_run.name.startswith("sgbench-munge.") and not munge_run.exists(), f"{munge_run} left"
    conf = Path("/etc/slurm/slurm.conf")
    assert not (conf.exists() and conf.read_text().startswith(MARK)), f"{conf} left"


@dataclass
class ClusterRun:
    returncode: int
    output: str
    work: Path
    seconds: float

    def text(self, name: str) -> str:
        return (self.work / name).read_text()


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory) -> ClusterRun:
    """One run of the script (about 3 minutes on 2 cores) that the tests below read."""
    reason = why_no_cluster()
    if reason and os.environ.get("SGBENCH_REQUIRE_CLUSTER"):  # CI (.ci/run): the check must run
        pytest.fail(f"SGBENCH_REQUIRE_CLUSTER is set but {reason}")
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("cluster")
    data = write_tiny_corpus(write_learnable_mnist(base / "data"))
    start = time.monotonic()
    out = subprocess.run(["bash", str(SCRIPT), str(base / "work")], env=script_env(data), capture_output=True,
                         text=True, timeout=1500)
    run = ClusterRun(out.returncode, out.stdout + out.stderr, base / "work", time.monotonic() - start)
    print(f"\nlocal_slurm.sh: exit status {run.returncode} after {run.seconds:.0f} s\n{run.output}")
    return run


def test_script_passes_every_check(cluster_run):
    assert cluster_run.returncode == 0, cluster_run.output[-6000:]
    assert "all checks passed" in cluster_run.output


def test_every_smoke_job_went_through_sbatch_and_completed(cluster_run):
    """Every job Snakemake ran (all but the target rule `all`) was submitted with sbatch, with the
    memory the profiles give its rule and no GPU (the smoke tier asks for none), and COMPLETED."""
    out = cluster_run.text("slurm.out")
    assert cluster_run.text("slurm.rc").strip() == "0", out[-3000:]
    stats = out.split("Job stats:")[1].split("total")[0].splitlines()[3:]
    expected = Counter({rule: int(n) for rule, n in (line.split() for line in stats if line.strip())})
    for rule in [r for r in expected if r in ("all", "report") or r.startswith(("aggregate_", "figures_"))]:
        del expected[rule]  # local rules: run by the submitting Snakemake, not as SLURM jobs
    submitted = {}  # SLURM job id -> rule
    for line in out.splitlines():
        if "has been submitted with SLURM jobid" in line:
            job_id = line.split("SLURM jobid ")[1].split()[0]
            log = Path(line.split("(log: ")[1].rstrip(")."))
            assert log.stat().st_size > 0, log
            submitted[job_id] = log.relative_to(cluster_run.work / "slurm" / "logs" / "slurm").parts[0].removeprefix("rule_")
    assert Counter(submitted.values()) == expected and len(expected) >= 5, (submitted, expected)
    profile = yaml.safe_load((ROOT / "tests" / "cluster" / "profile" / "config.yaml").read_text())
    jobs = {f[0]: f for f in (line.split("|") for line in cluster_run.text("slurm-jobs.txt").splitlines())}
    ctld_log = cluster_run.text("cluster/log/slurmctld.log")
    for job_id, rule in submitted.items():
        _, _, state, _, memory, gres, _ = jobs[job_id]
        mem_mb = profile["set-resources"].get(rule, {}).get("mem_mb", profile["default-resources"]["mem_mb"])
        assert (state, memory, gres) == ("COMPLETED", f"{mem_mb}M", "N/A"), (rule, jobs[job_id])
        assert f"_slurm_rpc_submit_batch_job: JobId={job_id} " in ctld_log
        assert f"_job_complete: JobId={job_id} WEXITSTATUS 0" in ctld_log
    report = cluster_run.work / "slurm" / "results" / "reports" / "smoke" / "REPORT.md"
    assert "Tier smoke: not the paper-scale replication" in report.read_text()


def test_slurm_run_computes_the_local_runs_numbers(cluster_run):
    local, slurm = cluster_run.work / "local", cluster_run.work / "slurm"
    assert cluster_run.text("local.rc").strip() == "0"
    assert len(list(slurm.glob("results/runs/**/metrics.json"))) >= 9
    assert compare_runs.differences(local, slurm) == []


def test_compare_runs_sees_a_changed_number(cluster_run, tmp_path):
    """The comparison is not vacuous: one changed test error is a difference."""
    copy = tmp_path / "slurm"
    shutil.copytree(cluster_run.work / "slurm" / "results", copy / "results")
    metrics = copy / "results" / "runs" / "feedforward" / "smoke" / "mnist-fcn2-dni-seed0" / "metrics.json"
    data = json.loads(metrics.read_text())
    data["final"]["test_error"] += 0.1
    metrics.write_text(json.dumps(data))
    assert compare_runs.differences(cluster_run.work / "local", copy) == [
        "results/runs/feedforward/smoke/mnist-fcn2-dni-seed0/metrics.json: differs in final"]


def test_a_failing_job_fails_the_workflow_naming_its_logs(cluster_run):
    out = cluster_run.text("failing.out")
    assert cluster_run.text("failing.rc").strip() != "0"
    assert "Error in rule fail:" in out and "SLURM status is: 'FAILED'" in out
    # the rule's own log, and the job's sbatch log, which exists
    logs = [line for line in out.splitlines() if line.strip().startswith("log: logs/fail.log, ")]
    assert logs, out[-3000:]
    slurm_log = Path(logs[-1].split(", ")[1].split(" (check log")[0])
    assert slurm_log.is_relative_to(cluster_run.work / "failing" / "logs" / "slurm") and slurm_log.stat().st_size > 0
    assert "failing on purpose" in cluster_run.text("failing/logs/fail.log")
    # the profile's retries: 2, so three submissions, each reported
    assert out.count("Error in rule fail:") == 3


def test_no_daemon_job_or_file_is_left(cluster_run):
    assert "stopped slurmd" in cluster_run.output and "stopped munged" in cluster_run.output
    assert_nothing_left(cluster_run.work)


def test_an_interrupted_run_stops_everything(cluster_run, tmp_path):
    """SIGTERM (a cancelled CI job) while jobs run on the cluster: the script still stops its
    snakemake runs, their jobs and every daemon."""
    work = tmp_path / "work"
    proc = subprocess.Popen(["bash", str(SCRIPT), str(work)], env=script_env(write_tiny_corpus(write_learnable_mnist(tmp_path / "data"))),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            slurm_out = work / "slurm.out"
            if slurm_out.exists() and "has been submitted with SLURM jobid" in slurm_out.read_text():
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
        assert "has been submitted with SLURM jobid" in (work / "slurm.out").read_text(), "no job submitted in 120 s"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, output
    assert "stopping the cluster" in output and "stopped slurmctld" in output, output
    assert_nothing_left(work)
