"""The precision setting (issue #26, item 1): bf16 autocast around each step's forward, TF32 on CUDA,
fp32 by default; recorded in metrics.json, refused where the device cannot run it, never pooled."""
import json

import pytest
import torch
from helpers import tiny_ff_config

from sgbench import runtime
from sgbench.cli import main
from sgbench.dni import DNI, MLPSG
from sgbench.families.feedforward.run import train_ff
from sgbench.families.feedforward.tables import collect
from sgbench.families.rnn.config import RNNConfig
from sgbench.families.rnn.run import train_rnn

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def curves(metrics):
    return {k: v for k, v in metrics["curves"].items() if k != "elapsed_s"}


def test_bf16_feedforward_dni_trains_records_bf16_and_differs_from_fp32(data_root, tmp_path):
    fp32 = train_ff(tiny_ff_config(data_root), tmp_path / "fp32")
    bf16 = train_ff(tiny_ff_config(data_root, precision="bf16"), tmp_path / "bf16")
    on_disk = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    runtime.validate(on_disk, "ff_metrics")
    assert fp32["config"]["precision"] == "fp32" and on_disk["config"]["precision"] == "bf16"
    assert curves(bf16) != curves(fp32), "bf16 autocast changed nothing: the forward did not run in bf16"
    assert bf16["final"]["test_error"] < 50, "the fixture is easy: a bf16 DNI run should beat chance (90%)"
    assert all(0 < v < 1 for boundary in bf16["curves"]["sg_loss"] for v in boundary), "the SG learns, finitely"


def test_bf16_keeps_parameters_gradients_and_sg_regression_fp32():
    torch.manual_seed(0)
    layer, head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)
    dni = DNI(MLPSG(8, hidden_layers=1, hidden_dim=16))
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    with runtime.autocast("bf16", x.device):
        logits = head(dni(layer(x)))
    assert logits.dtype == torch.bfloat16, "the forward runs in bf16"
    torch.nn.functional.cross_entropy(logits.float(), y).backward()
    assert dni.last_sg_loss.dtype == torch.float32, "the SG regression's loss is computed in fp32"
    for module in (layer, head, dni):
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in module.parameters())


def test_fp32_autocast_is_a_null_context():
    with runtime.autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_rnn_dni_trains_records_bf16_and_differs_from_fp32(tmp_path):
    def run(precision):
        cfg = RNNConfig(task="copy", method="dni", T=2, timesteps=160, batch_size=4, hidden_size=16,
                        curriculum_window=5, log_points=4, device="cpu", threads=1, probe_horizon=2,
                        precision=precision)
        return train_rnn(cfg, tmp_path / precision)

    fp32, bf16 = run("fp32"), run("bf16")
    runtime.validate(json.loads((tmp_path / "bf16" / "metrics.json").read_text()), "rnn_metrics")
    assert fp32["config"]["precision"] == "fp32" and bf16["config"]["precision"] == "bf16"
    assert curves(bf16) != curves(fp32)
    assert all(v == v and v < 20 for v in bf16["curves"]["bits_per_output_step"]), "finite, sane losses"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is of a CPU run")
def test_tf32_on_a_cpu_run_is_refused_before_training(data_root, tmp_path, capsys):
    with pytest.raises(ValueError, match="tf32.*needs a CUDA device.*--precision bf16"):
        train_ff(tiny_ff_config(data_root, precision="tf32"), tmp_path / "api")
    assert not (tmp_path / "api" / "metrics.json").exists() and not (tmp_path / "api" / "checkpoint.pt").exists()
    code = main(["train-ff", "--dataset", "mnist", "--layers", "2", "--iterations", "5", "--device", "cpu",
                 "--data-root", str(data_root), "--precision", "tf32", "--out", str(tmp_path / "cli")])
    assert code == 2 and "needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "cli" / "metrics.json").exists()


def test_unknown_precision_is_refused_with_the_valid_ones(data_root):
    with pytest.raises(ValueError, match="unknown precision 'fp16': choose one of fp32, bf16, tf32"):
        tiny_ff_config(data_root, precision="fp16").resolved()
    with pytest.raises(ValueError, match="unknown precision"):
        RNNConfig(precision="half").resolved()


def test_a_table_over_fp32_and_bf16_runs_does_not_pool_them(data_root, tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    train_ff(tiny_ff_config(data_root, iterations=10, eval_every=5), a)
    train_ff(tiny_ff_config(data_root, iterations=10, eval_every=5, precision="bf16", seed=1), b)
    with pytest.raises(runtime.MetricsError, match="several precisions.*bf16: 1, fp32: 1.*on their own"):
        collect([a / "metrics.json", b / "metrics.json"])
    runs, _ = collect([b / "metrics.json"])
    assert list(runs["precision"]) == ["bf16"], "the runs table records each run's precision"


def test_a_non_fp32_run_has_its_own_name_and_fp32_names_stand():
    from sgbench.families.feedforward.config import run_name
    from sgbench.families.rnn.config import run_name as rnn_name
    point = dict(dataset="mnist", arch="fcn", layers=3, method="dni", seed=0)
    assert run_name(point) == run_name(point | {"precision": "fp32"}) == "mnist-fcn3-dni-seed0"
    assert run_name(point | {"precision": "bf16"}) == "mnist-fcn3-dni-bf16-seed0"
    assert rnn_name(dict(task="copy", T=4, method="dni", seed=0, precision="bf16")) == "copy-T4-dni-bf16-seed0"


@CUDA
def test_tf32_and_bf16_on_cuda_record_their_precision(data_root, tmp_path):
    for precision in ("tf32", "bf16"):
        m = train_ff(tiny_ff_config(data_root, precision=precision, device="cuda"), tmp_path / precision)
        assert m["config"]["precision"] == precision and m["final"]["test_error"] < 50
    assert not torch.backends.cuda.matmul.allow_tf32, "the TF32 flag is the run's, restored after it"


@pytest.mark.parametrize("method", ["cdni", "ddp_split"])
def test_bf16_parallel_workers_train_and_record_bf16(data_root, tmp_path, method):
    """Stages (locked, decoupled and pipelined workers run Stage.forward) and data parallel replicas: the links
    between workers stay fp32 (a stage's output is cast back), so bf16 runs on the same messages."""
    from sgbench.families.parallel.config import ParallelConfig
    from sgbench.families.parallel.run import train_parallel
    cfg = ParallelConfig(dataset="mnist", layers=2, iterations=20, batch_size=32, lr=3e-4, eval_every=10,
                         sg_hidden_layers=1, sg_hidden_dim=32, device="cpu", tier="smoke", data_root=str(data_root),
                         method=method, workers=2, precision="bf16")
    m = train_parallel(cfg, tmp_path / method)
    runtime.validate(json.loads((tmp_path / method / "metrics.json").read_text()), "parallel_metrics")
    assert m["status"] == "completed" and m["config"]["precision"] == "bf16"
    assert all(v == v for v in m["curves"]["train_loss"] if v is not None), "finite losses"


def test_bf16_charlm_trains_and_records_bf16(tmp_path):
    from test_charlm import tiny
    corpus = tmp_path / "tiny-plays"
    corpus.mkdir()
    for i in range(10):
        text = "".join(f"ACT {j}. Enter the {i}th player, speaking.\n" for j in range(40))
        (corpus / f"play_{i}.txt").write_text(text)
    m = tiny(corpus, tmp_path / "run", precision="bf16")
    runtime.validate(json.loads((tmp_path / "run" / "metrics.json").read_text()), "charlm_metrics")
    assert m["status"] == "completed" and m["config"]["precision"] == "bf16"


def test_a_run_recorded_before_precision_existed_is_the_same_fp32_run(data_root, tmp_path):
    """metrics.json written before issue #26 has no precision: the finished-run check counts it as the
    fp32 run (not retrained), and as another run than a bf16 one."""
    from sgbench.families import get
    cfg = tiny_ff_config(data_root, iterations=10, eval_every=5)
    train_ff(cfg, tmp_path / "run")
    path = tmp_path / "run" / "metrics.json"
    recorded = json.loads(path.read_text())
    del recorded["config"]["precision"]
    path.write_text(json.dumps(recorded))
    assert runtime.finished_run(tmp_path / "run", cfg.resolved(), get("feedforward"), "fix") == recorded
    with pytest.raises(ValueError, match="differs in precision: 'fp32' there, 'bf16' here"):
        runtime.finished_run(tmp_path / "run", tiny_ff_config(data_root, iterations=10, eval_every=5,
                                                              precision="bf16").resolved(), get("feedforward"), "fix")
