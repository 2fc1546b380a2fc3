"""Config values are type-checked wherever they come from (issue #18, item 2): flags, config files,
tier settings and Python; safe coercions are made, everything else is one error naming the key."""
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sgbench.config import ConfigTypeError, coerce, field_help
from sgbench.families.feedforward.config import FFConfig
from sgbench.families.parallel.config import ParallelConfig
from sgbench.families.rnn.config import RNNConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("values, field, want", [
    ({"lr": "1e-4"}, "lr", 1e-4),                    # PyYAML reads 1e-4 as text
    ({"lr": "0.001"}, "lr", 0.001),                  # a tier's settings: {lr: "0.001"}
    ({"lr": 1}, "lr", 1.0),
    ({"iterations": "5e5"}, "iterations", 500_000),  # a whole number written as a float: exact, kept
    ({"iterations": 40.0}, "iterations", 40),
    ({"iterations": "40"}, "iterations", 40),        # every flag arrives as text
    ({"lr_milestones": "0.5,0.75"}, "lr_milestones", [0.5, 0.75]),
    ({"update_periods": [1, 2.0, "3"]}, "update_periods", [1, 2, 3]),
    ({"sg_hidden_dim": None}, "sg_hidden_dim", None),
    ({"download": "yes"}, "download", True),
    ({"download": "false"}, "download", False),
])
def test_safe_coercions(values, field, want):
    cfg = FFConfig.from_dict(values)
    assert getattr(cfg, field) == want and type(getattr(cfg, field)) is type(want)


@pytest.mark.parametrize("cls, values, message", [
    (FFConfig, {"iterations": 20.5}, "iterations (--iterations): expected a whole number, got 20.5 (not rounded"),
    (FFConfig, {"batch_size": 64.5}, "batch_size (--batch-size): expected a whole number, got 64.5"),
    (FFConfig, {"batch_size": "64.5"}, "batch_size (--batch-size): expected a whole number, got '64.5'"),
    (FFConfig, {"layers": True}, "layers (--layers): expected a whole number, got the boolean True"),
    (FFConfig, {"lr": "fast"}, "lr (--lr): expected a number, got 'fast'"),
    (FFConfig, {"lr": "nan"}, "lr (--lr): expected a finite number, got 'nan'"),
    (FFConfig, {"lr": [0.1]}, "lr (--lr): expected a finite number, got [0.1]"),
    (FFConfig, {"dataset": 10}, "dataset (--dataset): expected text, got 10 (int)"),
    (FFConfig, {"download": "maybe"}, "download (--download): expected true or false, got 'maybe'"),
    (FFConfig, {"lr_milestones": 0.5}, "lr_milestones (--lr-milestones): expected a list"),
    (FFConfig, {"lr_milestones": [0.5, "x"]}, "lr_milestones (--lr-milestones): expected a number, got 'x'"),
    (FFConfig, {"iterations": None}, "iterations (--iterations): a value is required, got null"),
    (RNNConfig, {"hidden_size": 32.5}, "hidden_size (--hidden-size): expected a whole number, got 32.5"),
    (ParallelConfig, {"workers": "two"}, "workers (--workers): expected a whole number, got 'two'"),
    (FFConfig, {"lr": 1e300}, "lr (--lr): 1e+300 is outside float32's range"),  # issue #25 item 4: a tier file too
    (RNNConfig, {"clip": "1e39"}, "clip (--clip): '1e39' is outside float32's range"),
    (ParallelConfig, {"targets": [10, 1e-50]}, "targets (--targets): 1e-50 is outside float32's range"),
])
def test_wrong_types_are_one_error_naming_the_key(cls, values, message):
    with pytest.raises(ConfigTypeError) as e:
        cls.from_dict(values)
    assert str(e.value).startswith(message)


def test_exact_float_for_an_int_is_coerced_everywhere():
    """RNN hidden_size 32.0: coerced to 32 (exact; say so in the docs), never a float that breaks torch later."""
    assert RNNConfig.from_dict({"hidden_size": 32.0}).hidden_size == 32
    assert type(RNNConfig(hidden_size=32.0).hidden_size) is int  # the constructor checks too


def test_replace_is_checked_too():
    with pytest.raises(ConfigTypeError, match="lr"):
        dataclasses.replace(FFConfig(), lr="x")


def test_resolved_after_coercion_has_no_type_error():
    """Before: lr '1e-4' reached `c.lr > 0` and raised TypeError."""
    assert FFConfig.from_dict({"lr": "1e-4", "iterations": "100"}).resolved().lr == 1e-4


def test_unsupported_annotation_is_a_programming_error():
    with pytest.raises(TypeError):
        coerce("x", dict, {})


def test_every_family_config_explains_its_fields():
    """--help shows each field's comment (sgbench.config.field_help): every field of every run config has one."""
    for cls in (FFConfig, RNNConfig, ParallelConfig):
        helps = field_help(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not helps.get(f.name)]
        assert not missing, f"{cls.__name__}: fields without an explanation: {missing}"


def _snakemake_dry_run(tmp_path, old, new):
    shutil.copytree(ROOT / "workflows", tmp_path / "wf" / "workflows")
    shutil.copy(ROOT / "Snakefile", tmp_path / "wf")
    tier = tmp_path / "wf" / "workflows" / "config" / "tiers" / "smoke.yaml"
    text = tier.read_text()
    assert old in text
    tier.write_text(text.replace(old, new, 1))
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(tmp_path / "wf" / "Snakefile"), "-n",
                           "--directory", str(tmp_path), "--config", "tier=smoke"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_bad_tier_setting_type_is_refused_when_the_dag_is_built(tmp_path):
    """A tier's `settings: {batch_size: 64.5}` fails the dry run, naming the tier file and the key."""
    out = _snakemake_dry_run(tmp_path, "batch_size: 64,", "batch_size: 64.5,")
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "smoke.yaml" in text and "batch_size (--batch-size): expected a whole number, got 64.5" in text
