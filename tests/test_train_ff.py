"""End-to-end feed-forward runs on tiny generated data: JSON, determinism, resume, CLI errors."""
import json

import jsonschema
import pytest
from helpers import tiny_ff_config

from sgbench import runtime
from sgbench.cli import main
from sgbench.families.feedforward.run import RunInterrupted, train_ff

tiny = tiny_ff_config


def results(metrics):
    """The numbers a run computes (not its timing or where it ran)."""
    curves = {k: v for k, v in metrics["curves"].items() if k != "elapsed_s"}
    return curves, metrics["final"], metrics["config"]


@pytest.mark.parametrize("method", ["backprop", "dni", "cdni", "no_bprop"])
def test_tiny_run_writes_schema_valid_metrics_and_learns(data_root, tmp_path, method):
    metrics = train_ff(tiny(data_root, method=method), tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    runtime.validate(on_disk, "ff_metrics")
    assert on_disk["curves"]["step"] == [10, 20, 30, 40]
    assert on_disk["dataset"]["variant"] == "mnist" and on_disk["dataset"]["n_train"] + on_disk["dataset"]["n_val"] == 512
    assert len(on_disk["curves"]["sg_loss"]) == (2 if method in ("dni", "cdni") else 0)
    assert on_disk["meta"]["device"] == "cpu" and on_disk["timing"]["steps_per_s"] > 0
    assert metrics["final"]["test_error"] < 50, "the fixture is easy: every method should beat chance (90%)"
    assert not (tmp_path / "checkpoint.pt").exists()


def test_same_seed_gives_identical_metrics(data_root, tmp_path):
    a = train_ff(tiny(data_root, seed=3), tmp_path / "a")
    b = train_ff(tiny(data_root, seed=3), tmp_path / "b")
    c = train_ff(tiny(data_root, seed=4), tmp_path / "c")
    assert results(a) == results(b)
    assert results(a)[0] != results(c)[0]


def test_killed_run_leaves_no_metrics_and_resumes_to_the_same_result(data_root, tmp_path):
    straight = train_ff(tiny(data_root), tmp_path / "straight")
    with pytest.raises(RunInterrupted):
        train_ff(tiny(data_root), tmp_path / "resumed", _stop_after=20)
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    resumed = train_ff(tiny(data_root), tmp_path / "resumed")
    assert results(resumed) == results(straight)


def test_a_checkpoint_from_before_a_setting_existed_resumes_as_that_settings_old_value(data_root, tmp_path, caplog):
    """A run killed before an upgrade that added a config key (adam, precision) resumes: its checkpoint's
    config lacks the key, which then holds the value every run had (FFConfig.ADDED). The same
    checkpoint does not resume a run that sets the key otherwise."""
    import torch
    straight = train_ff(tiny(data_root), tmp_path / "straight")
    for name in ("old", "fused"):
        with pytest.raises(RunInterrupted):
            train_ff(tiny(data_root), tmp_path / name, _stop_after=20)
        path = tmp_path / name / "checkpoint.pt"
        ckpt = torch.load(path, weights_only=False)
        del ckpt["config"]["adam"], ckpt["config"]["precision"]
        torch.save(ckpt, path)
    resumed = train_ff(tiny(data_root), tmp_path / "old")
    assert resumed["meta"]["resumed"] and results(resumed) == results(straight)
    fused = train_ff(tiny(data_root, adam="fused"), tmp_path / "fused")
    assert not fused["meta"]["resumed"] and "starting afresh" in caplog.text


def test_checkpoint_of_another_config_is_not_resumed(data_root, tmp_path):
    with pytest.raises(RunInterrupted):
        train_ff(tiny(data_root, lr=1e-2), tmp_path, _stop_after=20)
    fresh = train_ff(tiny(data_root), tmp_path / "fresh")
    restarted = train_ff(tiny(data_root), tmp_path)
    assert results(restarted) == results(fresh)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert results(train_ff(tiny(data_root), tmp_path / "garbage")) == results(fresh)


def test_schema_rejects_an_incomplete_file(data_root, tmp_path):
    metrics = train_ff(tiny(data_root, iterations=10), tmp_path)
    del metrics["final"]
    with pytest.raises(jsonschema.ValidationError):
        runtime.validate(metrics, "ff_metrics")


def test_tiny_cnn_run(data_root, tmp_path):
    cfg = tiny(data_root, arch="cnn", layers=2, iterations=2, eval_every=1, batch_size=8, test_limit=16,
               sg_hidden_layers=0, method="cdni")
    metrics = train_ff(cfg, tmp_path)
    assert metrics["model"]["boundaries"] == 2 and len(metrics["curves"]["step"]) == 2


@pytest.mark.parametrize("bad,message", [
    ({"method": "dnii"}, "unknown method 'dnii'"),
    ({"iterations": -5}, "iterations must be >= 1"),
    ({"arch": "mlp"}, "unknown arch"),
    ({"lr_milestones": [0.6, 1.5]}, "lr_milestones"),
])
def test_bad_config_is_refused(data_root, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny(data_root, **bad).resolved()


def test_cli_runs_from_config_file_with_flag_override(data_root, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"dataset: mnist\nlayers: 1\nmethod: backprop\niterations: 5\nbatch_size: 16\n"
                   f"data_root: {data_root}\ndevice: cpu\n")
    assert main(["train-ff", "--config", str(cfg), "--iterations", "4", "--eval-every", "2", "--lr-milestones", "0.5,0.75",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["iterations"] == 4 and metrics["config"]["method"] == "backprop"
    assert metrics["config"]["lr_milestones"] == [0.5, 0.75] and metrics["config"]["sg_hidden_layers"] is None


def test_cli_reports_bad_input_clearly(data_root, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset: mnist\nlearning_rate: 0.1\n")
    assert main(["train-ff", "--config", str(cfg), "--out", str(tmp_path / "x")]) == 2
    assert "unknown config key(s) ['learning_rate']" in capsys.readouterr().err
    assert main(["train-ff", "--method", "bogus", "--out", str(tmp_path / "x")]) == 2
    assert "choose one of backprop, dni, cdni, no_bprop" in capsys.readouterr().err
    assert main(["train-ff", "--data-root", str(tmp_path / "nowhere"), "--iterations", "1",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--download" in err and "SGBENCH_DATA" in err
    assert not (tmp_path / "x" / "metrics.json").exists()
