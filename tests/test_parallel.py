"""The multi-worker trainer (sgbench.families.parallel): same numbers as one process where it must,
learning on two workers, valid JSON, and a killed worker ending the run (test_parallel_baselines.py:
the data-parallel and pipeline-schedule baselines, the stored late SG, restart, divergence)."""
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import write_learnable_mnist

from sgbench import runtime
from sgbench.dni import DNI, MLPSG
from sgbench.families.feedforward.run import FFConfig, train_ff
from sgbench.families.parallel.config import ParallelConfig
from sgbench.families.parallel.model import (
    balanced_split,
    predicted_step_s,
    stage_bounds,
)
from sgbench.families.parallel.run import free_port, train_parallel


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_learnable_mnist(tmp_path_factory.mktemp("data"))


COMMON = dict(dataset="mnist", layers=2, iterations=30, batch_size=32, lr=3e-4, eval_every=10,
              sg_hidden_layers=1, sg_hidden_dim=32, device="cpu", tier="smoke")


def parallel(data_root, **kw):
    return ParallelConfig(**(COMMON | dict(data_root=str(data_root), method="dni", workers=2) | kw))


def numbers(metrics):
    return {k: metrics["curves"][k] for k in ("step", "train_loss", "test_error")}


def assert_same_run(a, b):
    """Same steps, test errors and (to float rounding) training losses."""
    assert a["curves"]["step"] == b["curves"]["step"] and a["curves"]["test_error"] == b["curves"]["test_error"]
    assert a["curves"]["train_loss"] == pytest.approx(b["curves"]["train_loss"], rel=1e-6)


def test_one_worker_is_the_single_process_dni_run(data_root, tmp_path):
    single = train_ff(FFConfig(**(COMMON | dict(data_root=str(data_root), method="dni"))), tmp_path / "ff")
    # The same thread count: another one changes float rounding in the matrix products.
    one = train_parallel(parallel(data_root, workers=1, threads=torch.get_num_threads()), tmp_path / "k1")
    assert_same_run(one, single)


@pytest.mark.parametrize("arch, workers, split", [("fcn", 3, [1, 1, 1]), ("cnn", 2, [1, 2])])
def test_locked_pipeline_is_single_process_backprop(data_root, tmp_path, arch, workers, split):
    """Activations, labels and gradients cross the workers intact (vectors and feature maps)."""
    small = dict(arch=arch, method="backprop", iterations=30, test_limit=100) | (
        dict(iterations=10, eval_every=5, batch_size=8) if arch == "cnn" else {})  # a CNN step is slow on a CPU
    single = train_ff(FFConfig(**(COMMON | dict(data_root=str(data_root)) | small)), tmp_path / "ff")
    locked = train_parallel(parallel(data_root, workers=workers, split=split, threads=torch.get_num_threads(), **small),
                            tmp_path / "locked")
    assert locked["model"]["split"] == split
    assert_same_run(locked, single)


@pytest.fixture(scope="module")
def two_workers(data_root, tmp_path_factory):
    """A 2-worker cDNI run: (its folder, its metrics)."""
    out = tmp_path_factory.mktemp("cdni-k2")
    return out, train_parallel(parallel(data_root, method="cdni", iterations=60, eval_every=20), out)


def test_two_decoupled_workers_learn_and_write_valid_json(data_root, two_workers, tmp_path):
    out, metrics = two_workers
    on_disk = json.loads((out / "metrics.json").read_text())
    runtime.validate(on_disk, "parallel_metrics")
    assert [w["rank"] for w in on_disk["timing"]["workers"]] == [0, 1]
    assert on_disk["timing"]["samples_per_s"] > 0 and on_disk["timing"]["link_latency_s"] > 0
    loss = metrics["curves"]["train_loss"]
    assert loss[-1] < 0.5 * loss[0], f"the loss should fall on the easy fixture: {loss}"
    assert metrics["final"]["test_error"] < 50
    assert not list(out.glob(".worker*")), "the workers' partial results are merged and removed"
    # Same seed, same numbers: the message order is fixed, so timing cannot change the result.
    again = train_parallel(parallel(data_root, method="cdni", iterations=60, eval_every=20), tmp_path / "again")
    assert numbers(again) == numbers(metrics)


def test_decoupled_workers_differ_from_one_process_only_by_the_late_sg(data_root, tmp_path):
    one = train_parallel(parallel(data_root, workers=1), tmp_path / "k1")
    two = train_parallel(parallel(data_root, workers=2), tmp_path / "k2")
    assert numbers(two) != numbers(one)  # the cut's SG model learns one batch late
    assert two["final"]["test_error"] < 50


def test_late_sg_regression_is_the_cut_target():
    """DNI.learn(h, c, g) gives the SG parameters the gradient they get when g reaches the cut itself."""
    torch.manual_seed(0)
    boundary = DNI(MLPSG(6, hidden_layers=1, hidden_dim=8, context_dim=3), conditioned=True)
    h, ctx, g = torch.randn(4, 6), torch.eye(3)[[0, 1, 2, 0]], torch.randn(4, 6)
    torch.nn.init.normal_(boundary.sg_model.net[-1].weight)
    cut, _ = boundary.split(h.clone().requires_grad_(), ctx)
    cut.backward(g)
    direct = [p.grad.clone() for p in boundary.parameters()]
    boundary.zero_grad()
    boundary.learn(h, ctx, g)
    assert all(torch.allclose(a, p.grad) for a, p in zip(direct, boundary.parameters()))
    assert any(a.abs().sum() > 0 for a in direct)


def test_balanced_split_and_the_analytic_model():
    assert balanced_split([4, 1, 1, 1, 1], 2) == [1, 4]
    assert balanced_split([1, 1, 1, 1], 2) == [2, 2]
    assert stage_bounds([1, 3]) == [(0, 1), (1, 4)]
    profiles, cut_s = {32: [2.0, 1.0, 1.0, 0.5]}, [0.3, 0.3, 0.3, 0.0]  # per-unit seconds at batch 32
    assert predicted_step_s("backprop", profiles, cut_s, [4], 32, 0.1) == 4.5
    assert predicted_step_s("backprop", profiles, cut_s, [1, 3], 32, 0.1) == pytest.approx(4.7)
    assert predicted_step_s("dni", profiles, cut_s, [1, 3], 32, 0.1) == pytest.approx(max(2.3, 2.5) + 0.2)
    assert predicted_step_s("dni", profiles, cut_s, [4], 32, 0.1) == 4.5
    assert predicted_step_s("dni", profiles, cut_s, [4], 16, 0.1) == 2.25  # one profile: proportional to the batch
    with pytest.raises(ValueError, match="unknown parallel method 'pipedream'"):
        predicted_step_s("pipedream", profiles, cut_s, [4], 32, 0.1)


@pytest.mark.parametrize("bad, message", [
    (dict(workers=4), "workers must be between 1 and"),
    (dict(split=[1, 1]), "split gives the units"),
    (dict(method="unlock"), "unknown method"),
])
def test_bad_parallel_config_is_refused(data_root, bad, message):
    with pytest.raises(ValueError, match=message):
        parallel(data_root, **bad).resolved()


# committed parallel runs made before issue #22's config split (the quick tier's were remade since)
REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "parallel-cpu" / "runs"


def test_a_run_recorded_before_the_config_split_is_the_same_run(tmp_path):
    """ParallelConfig no longer has FFConfig's update_prob, update_periods, dni_placement, warmup,
    probe_every, step (issue #22: it composes the shared fields instead of inheriting and refusing
    them). A committed metrics.json records them at the values the old code forced: it loads, and the
    finished-run check counts it as the same run; any other value of one is refused."""
    from sgbench.families import get
    recorded = json.loads((REFERENCE / "mnist-fcn3-cdni-k2-seed0" / "metrics.json").read_text())
    assert set(ParallelConfig.LEGACY) <= set(recorded["config"])
    cfg = ParallelConfig.from_dict(recorded["config"]).resolved()
    assert not set(ParallelConfig.LEGACY) & set(dataclasses.asdict(cfg))
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps(recorded))
    assert runtime.finished_run(out, cfg, get("parallel"), "fix") == recorded
    recorded["config"]["warmup"] = 0.3  # not a value any parallel run trained with
    (out / "metrics.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match="differs in warmup: 0.3 there"):
        runtime.finished_run(out, cfg, get("parallel"), "fix")
    with pytest.raises(ValueError, match="retired config key.*warmup=0.3.*warmup=0.0"):
        ParallelConfig.from_dict(recorded["config"])
    with pytest.raises(TypeError):
        ParallelConfig(update_prob=0.5)  # not a field of a parallel run at all


@pytest.mark.parametrize("method", ["cdni", "gpipe"])
def test_killed_worker_ends_the_run_with_an_error(data_root, tmp_path, method):
    cmd = [sys.executable, "-m", "sgbench", "train-parallel", "--dataset", "mnist", "--layers", "2",
           "--method", method, "--workers", "2", "--iterations", "1000000", "--batch-size", "32",
           "--eval-every", "1000", "--sg-hidden-dim", "32", "--data-root", str(data_root), "--device", "cpu",
           "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    lines, pids = [], {}

    def read():
        for line in proc.stderr:
            lines.append(line)
            if " pid " in line and "worker" in line:
                rank, pid = line.split("worker ")[1].split()[0], line.split(" pid ")[1].split(",")[0]
                pids[int(rank)] = int(pid)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.time() + 120
        while len(pids) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert len(pids) == 2, "both workers should start:\n" + "".join(lines)
        time.sleep(2)  # training by now
        os.kill(pids[1], signal.SIGKILL)
        rc = proc.wait(timeout=60)  # the bound: a dead worker must not leave the run hanging
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    out = "".join(lines)
    assert rc == 2, out
    assert "worker 1 of 2" in out and "SIGKILL" in out, out
    for pid in pids.values():  # no orphan: every worker is gone
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert not (tmp_path / "run" / "metrics.json").exists()


def variant(metrics, method, workers, seed, samples_per_s, time_to_target_s, late_sg="reevaluate"):
    """A copy of a real run's metrics, relabelled, with other timings (for the tables and verdicts)."""
    m = json.loads(json.dumps(metrics))
    m["config"].update(method=method, workers=workers, seed=seed, late_sg=late_sg)
    m["model"]["split"] = [m["model"]["units"]] if workers == 1 else m["model"]["split"]
    m["timing"].update(samples_per_s=samples_per_s)
    m["timing"]["time_to_target"] = [{"target_error": 10.0, "seconds": time_to_target_s,
                                      "step": None if time_to_target_s is None else 20}]
    return m


@pytest.mark.parametrize("cdni_speed, verdict", [(1500.0, "reproduced"), (700.0, "contradicted")])
def test_parallel_tables_figure_and_verdicts(two_workers, tmp_path, cdni_speed, verdict):
    from sgbench.analysis import tables as report
    from sgbench.claims import rules as claims
    from sgbench.families import aggregate, draw
    _, real = two_workers
    paths = []
    for seed in (0, 1):
        for method, k, speed, target in (("backprop", 1, 1000.0, 2.0), ("backprop", 2, 800.0, 2.5),
                                         ("cdni", 2, cdni_speed + seed, 1.5 if cdni_speed > 800 else None)):
            path = tmp_path / "runs" / f"{method}-k{k}-{seed}" / "metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(variant(real, method, k, seed, speed, target)))
            paths.append(path)
    tables = tmp_path / "tables"
    aggregate("parallel", paths, "smoke", tables)
    stats = report.read_table(tables / "parallel.csv")
    cdni = stats[(stats["method"] == "cdni") & (stats["workers"] == 2)].iloc[0]
    assert cdni["n"] == 2 and cdni["samples_per_s"] == pytest.approx(cdni_speed + 0.5)
    assert cdni["speedup"] == pytest.approx((cdni_speed + 0.5) / 1000.0)
    model = report.read_table(tables / "parallel_model.csv")
    assert sorted(model["workers"].unique()) == [1, 2, 3] and set(model["method"]) == {"backprop", "cdni"}
    text = (tables / "parallel.md").read_text()
    assert "| cdni (reevaluate) | 2 |" in text and ("not reached (0/2)" in text) == (cdni_speed < 800)
    check = claims.check_p1(claims.measured_from_runs(pd.DataFrame(), pd.DataFrame(), report.read_table(
        tables / "parallel_runs.csv")))
    assert check.verdict == verdict
    p2 = claims.check_p2(claims.measured_from_runs(pd.DataFrame(), pd.DataFrame(), report.read_table(
        tables / "parallel_runs.csv")))
    assert p2.verdict == verdict  # the slow variant never reaches the target
    drawn = draw("parallel", "smoke", tables, tmp_path / "figures")
    assert all(p.stat().st_size > 5000 and p.with_suffix(".pdf").exists() for p in drawn)


# ---------------------------------------------------------------- torchrun (issue #26 item 4)
def torchrun_node(node: int, port: int, config: Path, out: Path, env: dict) -> subprocess.Popen:
    """One node of a 2-node torchrun launch (one worker per node), both on this machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
           "-m", "sgbench", "train-parallel", "--config", str(config), "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def run_nodes(config: Path, outs, rc: int = 0) -> list[str]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    port = free_port()
    nodes = [torchrun_node(n, port, config, out, env) for n, out in enumerate(outs)]
    logs = []
    for node in nodes:
        try:
            logs.append(node.communicate(timeout=300)[0])
        finally:
            node.kill()
    assert [n.returncode for n in nodes] == [rc, rc], "\n---\n".join(logs)
    return logs


def without_timing(metrics: dict) -> dict:
    """Every number a seed fixes: all but the seconds (timing, elapsed_s) and the run's metadata."""
    kept = {k: v for k, v in metrics.items() if k not in ("timing", "meta")}
    kept["curves"] = {k: v for k, v in metrics["curves"].items() if k != "elapsed_s"}
    return kept


@pytest.mark.slow
def test_torchrun_on_two_nodes_gives_the_spawned_runs_metrics(data_root, tmp_path):
    """K = 2 under `torchrun --nnodes 2` as two node processes on this machine: the same numbers as
    the run's own spawn. Rank 1 gets its own --out (a node without a shared file system): it writes
    nothing; rank 0's folder holds metrics.json alone. Rerun, rank 0 finds the run finished and every
    rank stops (none waits for peers that never come); a finished run of another config there is one
    error on every rank."""
    cfg = parallel(data_root, method="dni", iterations=30, eval_every=10)
    spawned = train_parallel(cfg, tmp_path / "spawned")
    config = tmp_path / "run.json"
    config.write_text(json.dumps(dataclasses.asdict(cfg)))
    outs = [tmp_path / "node0" / "run", tmp_path / "node1" / "run"]
    run_nodes(config, outs)
    launched = json.loads((outs[0] / "metrics.json").read_text())
    assert without_timing(launched) == without_timing(spawned)
    assert launched["meta"]["launcher"] == "torchrun" and spawned["meta"]["launcher"] == "spawn"
    assert [w["rank"] for w in launched["timing"]["workers"]] == [0, 1]
    assert sorted(p.name for p in outs[0].iterdir()) == ["metrics.json"]
    assert not (tmp_path / "node1").exists()
    logs = run_nodes(config, outs)
    assert "already holds this run" in logs[0] and "nothing to train" in logs[1]
    assert json.loads((outs[0] / "metrics.json").read_text()) == launched
    config.write_text(json.dumps(dataclasses.asdict(cfg) | {"iterations": 20}))  # another run, same --out
    logs = run_nodes(config, outs, rc=1)  # torchrun's own code for a failed worker; the worker's is 2
    assert all(re.search(r"exitcode\s*: 2", log) for log in logs)
    assert "holds a finished run of another config (differs in iterations: " in logs[0]
    assert "rank 0 refused the run, no worker trained" in logs[1] and "differs in iterations" in logs[1]


@pytest.mark.parametrize("env, message", [
    (dict(WORLD_SIZE="3"), "torchrun started 3 processes (WORLD_SIZE) for a run of workers 2"),
    (dict(MASTER_ADDR=""), "MASTER_ADDR not: launch with torchrun"),
    (dict(RANK="two"), "must be whole numbers"),
    (dict(RANK="2"), "inconsistent launch"),
])
def test_a_bad_launch_is_refused_before_training(data_root, tmp_path, monkeypatch, capsys, env, message):
    """Every rank checks its launch before any rendezvous: one error naming the fix, exit 2, no folder."""
    from sgbench import cli
    base = dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
    for k, v in (base | env).items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "run"
    assert cli.main(["train-parallel", "--out", str(out), "--data-root", str(data_root), "--device", "cpu",
                     "--workers", "2", "--layers", "2"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_only_train_parallel_runs_under_torchrun(data_root, tmp_path, monkeypatch, capsys):
    from sgbench import cli
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1").items():
        monkeypatch.setenv(k, v)
    assert cli.main(["train-ff", "--out", str(tmp_path / "run"), "--data-root", str(data_root),
                     "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "does not run under torchrun" in err and "sgbench train-parallel" in err
    assert not (tmp_path / "run").exists()


def test_launch_env_reads_torchrun_variables():
    assert runtime.launch_env({}) is None
    got = runtime.launch_env(dict(RANK="1", WORLD_SIZE="4", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2",
                                  MASTER_ADDR="node7", MASTER_PORT="29500"))
    assert got == runtime.Launch(1, 4, 1, 2, "node7", 29500)
