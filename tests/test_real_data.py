"""On the real offline copies, when SGBENCH_DATA points at them (CI does); skipped otherwise."""
import os
from pathlib import Path

import pytest

from sgbench.data import load_dataset
from sgbench.families.feedforward.run import FFConfig, train_ff

ROOT = os.environ.get("SGBENCH_DATA")
has_mnist = bool(ROOT) and any((Path(ROOT) / "MNIST" / "raw").glob("train-images-idx3-ubyte*"))
needs_mnist = pytest.mark.skipif(not has_mnist, reason="SGBENCH_DATA does not point at an MNIST copy")


@needs_mnist
def test_real_mnist_loads_with_the_known_sizes_and_labels():
    data = load_dataset("mnist", ROOT)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_y[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # the well-known first MNIST labels


@needs_mnist
def test_short_dni_run_on_real_mnist_learns(tmp_path):
    cfg = FFConfig(dataset="mnist", layers=2, method="cdni", iterations=150, batch_size=128, lr=1e-3,
                   eval_every=150, test_limit=2000, data_root=ROOT, device="cpu")
    assert train_ff(cfg, tmp_path)["final"]["test_error"] < 25
