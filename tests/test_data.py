"""Tests for sgbench.data on tiny fixtures built in tmp_path (never the shared offline copies)."""
from __future__ import annotations

import logging
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_unreadable, write_idx
from PIL import Image

from sgbench import data as D
from sgbench.data import (
    DataNotFoundError,
    ImageData,
    load_dataset,
    resolve_cache_dir,
    resolve_data_root,
)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    # never read the developer's SGBENCH_DATA, never write to the home cache
    monkeypatch.delenv("SGBENCH_DATA", raising=False)
    monkeypatch.setenv("SGBENCH_CACHE", str(tmp_path / "env-cache"))


# ------------------------------------------------------------------------------------ fixtures

def make_mnist(raw: Path, gz: bool = True, n=(5, 3)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for (split, img, lbl), count in zip(D.MNIST_FILES, n):
        arrays[f"{split}_x"] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        arrays[f"{split}_y"] = rng.integers(0, 10, count, dtype=np.uint8)
        ext = ".gz" if gz else ""
        write_idx(raw / f"{img}{ext}", arrays[f"{split}_x"])
        write_idx(raw / f"{lbl}{ext}", arrays[f"{split}_y"])
    return arrays


def make_cifar_batches(root: Path) -> dict[str, np.ndarray]:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    xs, ys = {"train": [], "test": []}, {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        split = "test" if name == "test_batch" else "train"
        x = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, 2)]
        with open(d / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": y, b"batch_label": b"x"}, f)
        xs[split].append(x)
        ys[split].append(y)
    return {f"{s}_x": np.concatenate(xs[s]).reshape(-1, 3, 32, 32) for s in xs} | \
           {f"{s}_y": np.concatenate(ys[s]) for s in ys}


def color(ci: int, k: int) -> tuple[int, int, int]:
    return (ci * 25, 200 - ci * 10, 40 + 60 * k)  # flat colours survive JPEG almost exactly


def make_jpeg_tree(tree: Path, per_split=(2, 1), classes=CLASSES) -> Path:
    # write classes in shuffled order: labels must come from sorted names, not creation order
    for split, n in zip(("train", "test"), per_split):
        for ci in np.random.default_rng(2).permutation(len(classes)):
            (tree / split / classes[ci]).mkdir(parents=True)
            for k in reversed(range(n)):
                Image.new("RGB", (32, 32), color(ci, k)).save(tree / split / classes[ci] / f"{k:04d}.jpg", quality=95)
    return tree


def make_tar(tree: Path, tar: Path) -> Path:
    with tarfile.open(tar, "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(tree / split, arcname=split)
    return tar


# ----------------------------------------------------------------------------------------- MNIST

@pytest.mark.parametrize("gz", [True, False])
def test_mnist_loads_gz_and_plain(tmp_path, gz):
    ref = make_mnist(tmp_path / "MNIST" / "raw", gz=gz)
    d = load_dataset("mnist", tmp_path)
    assert isinstance(d, ImageData) and d.name == "mnist" and d.num_classes == 10
    assert d.source == str(tmp_path / "MNIST" / "raw")
    assert d.train_x.shape == (5, 1, 28, 28) and d.test_x.shape == (3, 1, 28, 28)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.input_shape == (1, 28, 28)
    assert np.array_equal(d.train_x[:, 0].numpy(), ref["train_x"])
    assert np.array_equal(d.test_y.numpy(), ref["test_y"])


@pytest.mark.parametrize("sub", ["MNIST", "MNIST/raw"])
def test_mnist_forgives_root_pointing_inside(tmp_path, sub):
    make_mnist(tmp_path / "MNIST" / "raw")
    assert load_dataset("mnist", tmp_path / sub).train_x.shape == (5, 1, 28, 28)


def test_mnist_bad_magic(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    make_mnist(raw)
    write_idx(raw / "train-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8), magic=1234)
    with pytest.raises(DataNotFoundError, match="bad magic number 1234") as e:
        load_dataset("mnist", tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(e.value) and "--download" in str(e.value)


def test_mnist_truncated_gzip(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    make_mnist(raw)
    p = raw / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte.gz") as e:
        load_dataset("mnist", tmp_path)
    assert e.value.__cause__ is not None


def test_mnist_count_mismatch(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    make_mnist(raw)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataNotFoundError, match="5 images but .* 4 labels"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar10-jpeg"])
def test_missing_data_message_says_how_to_fix(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as e:
        load_dataset(name, root, cache_dir=tmp_path / "cache")
    msg = str(e.value)
    for needle in ("--download", "SGBENCH_DATA", "--data-root", str(root)):
        assert needle in msg
    assert ("MNIST" if name == "mnist" else "cifar10") in msg
    assert not root.exists()  # looking must not create anything


def test_download_failure_wraps_underlying_error(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise OSError("no route to host")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataNotFoundError, match="no route to host") as e:
        load_dataset("mnist", tmp_path, download=True)
    assert isinstance(e.value.__cause__, OSError)


# -------------------------------------------------------------------------------------- CIFAR-10

def test_cifar_python_batches(tmp_path):
    ref = make_cifar_batches(tmp_path)
    d = load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")
    assert d.name == "cifar10" and d.input_shape == (3, 32, 32)
    assert d.train_x.shape == (10, 3, 32, 32) and d.test_x.shape == (2, 3, 32, 32)
    assert np.array_equal(d.train_x.numpy(), ref["train_x"]) and np.array_equal(d.test_y.numpy(), ref["test_y"])
    assert d.train_y.dtype == torch.int64


def test_cifar_missing_test_batch_is_an_error_not_a_fallback(tmp_path):
    make_cifar_batches(tmp_path)
    make_jpeg_tree(tmp_path / "cifar10-jpeg")
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataNotFoundError, match="test_batch"):
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")


def test_original_preferred_and_jpeg_name_skips_it(tmp_path):
    make_cifar_batches(tmp_path)
    make_jpeg_tree(tmp_path / "cifar10-jpeg")
    assert load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "c").name == "cifar10"
    assert load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c").name == "cifar10-jpeg"
    (tmp_path / "cifar10-jpeg").rename(tmp_path / "elsewhere")
    with pytest.raises(DataNotFoundError, match="not found"):
        load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c")


def test_jpeg_tree_labels_by_sorted_class_name(tmp_path):
    tree = make_jpeg_tree(tmp_path / "cifar10-jpeg")
    d = load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")
    assert d.name == "cifar10-jpeg" and d.source == str(tree)
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (10, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.train_y.tolist() == [c for c in range(10) for _ in range(2)]
    assert d.test_y.tolist() == list(range(10))
    # within a class, files sorted by name: 0000.jpg then 0001.jpg
    for i, (ci, k) in enumerate((c, k) for c in range(10) for k in range(2)):
        got = d.train_x[i].float().mean(dim=(1, 2))
        assert torch.allclose(got, torch.tensor(color(ci, k), dtype=torch.float32), atol=4), (i, got)


def test_tarball_gives_same_tensors_as_tree(tmp_path):
    tree = make_jpeg_tree(tmp_path / "a" / "cifar10-jpeg")
    make_tar(tree, tmp_path / "cifar10-jpeg.tar.gz")
    a = load_dataset("cifar10-jpeg", tmp_path / "a", cache_dir=tmp_path / "cache")
    b = load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "cache")
    assert b.name == "cifar10-jpeg" and b.source == str(tmp_path / "cifar10-jpeg.tar.gz")
    for k in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


def test_download_is_not_attempted_when_a_jpeg_copy_is_there(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise AssertionError("must not download: a local copy exists")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    make_tar(make_jpeg_tree(tmp_path / "t"), tmp_path / "cifar10-jpeg.tar.gz")
    assert load_dataset("cifar10", tmp_path, download=True, cache_dir=tmp_path / "c").name == "cifar10-jpeg"


def test_second_load_hits_cache(tmp_path, monkeypatch, caplog):
    make_tar(make_jpeg_tree(tmp_path / "t"), tmp_path / "cifar10-jpeg.tar.gz")
    first = load_dataset("cifar10", tmp_path)  # cache dir from SGBENCH_CACHE
    assert len(list((tmp_path / "env-cache").glob("cifar10-jpeg-*.pt"))) == 1
    assert list((tmp_path / "env-cache").glob("*.tmp")) == []

    def boom(*a, **k):
        raise AssertionError("decoded despite cache")
    monkeypatch.setattr(D, "_decode_jpeg", boom)
    with caplog.at_level(logging.INFO, logger="sgbench.data"):
        second = load_dataset("cifar10", tmp_path)
    assert "from cache" in caplog.text
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)


def test_cache_invalidated_when_source_changes(tmp_path):
    tar = make_tar(make_jpeg_tree(tmp_path / "t"), tmp_path / "cifar10-jpeg.tar.gz")
    load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c")
    os.utime(tar, ns=(1, 1))
    load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.pt"))) == 2


def test_corrupt_cache_is_rebuilt(tmp_path, caplog):
    make_jpeg_tree(tmp_path / "cifar10-jpeg")
    first = load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c")
    (cache,) = (tmp_path / "c").glob("*.pt")
    cache.write_bytes(b"not a torch file")
    with caplog.at_level(logging.INFO, logger="sgbench.data"):
        again = load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c")
    assert "ignoring unreadable cache" in caplog.text and "decoding" in caplog.text
    assert torch.equal(first.train_x, again.train_x)
    assert D._load_cache(cache) is not None  # rewritten with good content


def test_jpeg_wrong_number_of_classes(tmp_path):
    make_jpeg_tree(tmp_path / "cifar10-jpeg", classes=CLASSES[:9])
    with pytest.raises(DataNotFoundError, match="9 classes"):
        load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c")


def test_jpeg_unreadable_image(tmp_path):
    tree = make_jpeg_tree(tmp_path / "cifar10-jpeg")
    (tree / "test" / "cat" / "0000.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataNotFoundError, match="cat/0000.jpg") as e:
        load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c")
    assert e.value.__cause__ is not None


def test_jpeg_missing_split_in_tarball(tmp_path):
    tree = make_jpeg_tree(tmp_path / "t")
    with tarfile.open(tmp_path / "cifar10-jpeg.tar.gz", "w:gz") as tf:
        tf.add(tree / "train", arcname="train")
    with pytest.raises(DataNotFoundError, match="no images in the test split"):
        load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c")


def test_truncated_tarball(tmp_path):
    tar = make_tar(make_jpeg_tree(tmp_path / "t"), tmp_path / "cifar10-jpeg.tar.gz")
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(DataNotFoundError, match="cifar10-jpeg.tar.gz"):
        load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c")


def test_mnist_truncated_plain_idx_is_named(tmp_path):
    """Issue #25 item 2 for MNIST: an uncompressed IDX file cut short is refused, naming it."""
    raw = tmp_path / "MNIST" / "raw"
    make_mnist(raw, gz=False)
    p = raw / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(DataNotFoundError, match="train-images-idx3-ubyte: .* data bytes do not fit header dims") as e:
        load_dataset("mnist", tmp_path)
    assert "\n" not in str(e.value) and str(e.value).endswith("replace that file with a good copy (--download "
                                                                "fetches the data set where internet exists)")


def test_truncated_tarball_in_the_gzip_stream_is_named(tmp_path):
    """Issue #25 item 2 for CIFAR-10: a cut inside the compressed stream (EOFError from gzip) as well."""
    tar = make_tar(make_jpeg_tree(tmp_path / "t"), tmp_path / "cifar10-jpeg.tar.gz")
    tar.write_bytes(tar.read_bytes()[:300])
    with pytest.raises(DataNotFoundError, match="cifar10-jpeg.tar.gz.*unreadable") as e:
        load_dataset("cifar10-jpeg", tmp_path, cache_dir=tmp_path / "c")
    assert "\n" not in str(e.value) and "replace that file with a good copy" in str(e.value)


@pytest.mark.parametrize("layout", ["mnist", "cifar-batches", "jpeg-tarball", "jpeg-tree"])
def test_a_data_file_the_user_may_not_read_is_a_permission_error(tmp_path, monkeypatch, layout):
    """Issue #25 item 5: one line naming the file and the permission problem, never "data is corrupt"."""
    if layout == "mnist":
        make_mnist(tmp_path / "MNIST" / "raw")
        name, denied = "mnist", tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    elif layout == "cifar-batches":
        make_cifar_batches(tmp_path)
        name, denied = "cifar10", tmp_path / D.CIFAR_BATCHES / "data_batch_3"
    elif layout == "jpeg-tarball":
        name, denied = "cifar10-jpeg", make_tar(make_jpeg_tree(tmp_path / "t"), tmp_path / "cifar10-jpeg.tar.gz")
    else:
        tree = make_jpeg_tree(tmp_path / "cifar10-jpeg")
        name, denied = "cifar10-jpeg", sorted((tree / "test").glob("*/*.jpg"))[0]
    make_unreadable(monkeypatch, denied)
    with pytest.raises(D.DataPermissionError) as e:
        load_dataset(name, tmp_path, cache_dir=tmp_path / "c")
    text = str(e.value)
    assert text.startswith(f"cannot read {denied}: permission denied (a permission problem, not damaged data)")
    assert "\n" not in text and "corrupt" not in text


# ------------------------------------------------------------------------------- resolution, names

def test_resolve_data_root_precedence(tmp_path, monkeypatch):
    assert resolve_data_root(None) == Path("data")
    monkeypatch.setenv("SGBENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root(tmp_path / "cli") == tmp_path / "cli"
    assert resolve_data_root(str(tmp_path / "cli")) == tmp_path / "cli"


def test_resolve_cache_dir(tmp_path, monkeypatch):
    assert resolve_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("SGBENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "sgbench"


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="mnist, cifar10, cifar10-jpeg"):
        load_dataset("svhn", tmp_path)


# ------------------------------------------------------------------------------------ validation hold-out, subsets

def class_sorted(n_train=600, n_test=200, classes=10) -> ImageData:
    """Like the JPEG copy of CIFAR-10: stored class by class. Pixel value = index (train) or 1000 + index (test),
    so any image can be traced back to where it came from."""
    def images(n, offset):
        return (offset + torch.arange(n)).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).to(torch.int32)
    return ImageData("cifar10-jpeg", "fixture", images(n_train, 0), torch.arange(classes).repeat_interleave(n_train // classes),
                     images(n_test, 1000), torch.arange(classes).repeat_interleave(n_test // classes))


def ids(x: torch.Tensor) -> set[int]:
    return set(x[:, 0, 0, 0].tolist())


def test_every_prefix_of_the_stratified_order_holds_every_class_in_its_share():
    labels = torch.cat([torch.zeros(300, dtype=torch.int64), torch.arange(1, 10).repeat_interleave(100)])
    order = D.stratified_order(labels)
    assert sorted(order.tolist()) == list(range(len(labels))) and torch.equal(order, D.stratified_order(labels))
    for n in (10, 24, 60, 333):
        counts = torch.bincount(labels[order[:n]], minlength=10).double()
        share = n * torch.bincount(labels, minlength=10).double() / len(labels)
        assert (counts - share).abs().max() <= 1, (n, counts)
    assert not torch.equal(order, D.stratified_order(labels, seed=1))  # the seed, not the file order, decides


def test_validation_is_disjoint_from_training_and_test_and_fixed():
    data = class_sorted()
    s = D.split(data, val_size=100)
    train, val, test = ids(s.train_x), ids(s.val_x), ids(s.test_x)
    assert len(val) == 100 and len(train) == 500 and len(test) == 200
    assert not train & val and not (train | val) & test and train | val == set(range(600))
    assert torch.equal(s.val_y.bincount(), torch.full((10,), 10))            # stratified
    assert ids(D.split(data, val_size=100).val_x) == val                       # the same hold-out every time
    limited = D.split(data, train_limit=50, test_limit=20, val_size=100)
    assert ids(limited.val_x) == val and ids(limited.train_x) <= train         # a limit never trains on validation
    assert D.default_val_size(60_000) == D.default_val_size(50_000) == 10_000 and D.default_val_size(600) == 120
    assert len(D.split(data).val_y) == 120 and len(D.split(data, val_size=0).val_y) == 0
    with pytest.raises(ValueError, match="val_size"):
        D.split(data, val_size=600)


def test_limited_subsets_of_a_class_sorted_set_hold_every_class():
    """Issue 18 item 4: the first N of a class-sorted copy were all class 0."""
    s = D.split(class_sorted(), train_limit=30, test_limit=20, val_size=100)
    assert torch.equal(s.train_y.bincount(minlength=10), torch.full((10,), 3))
    assert torch.equal(s.test_y.bincount(minlength=10), torch.full((10,), 2))
    assert len(set(s.train_y[:10].tolist())) == 10                             # the probe batch: the first N


def test_a_run_logs_validation_error_beside_test_error(tmp_path):
    from helpers import tiny_ff_config, write_learnable_mnist

    from sgbench.families.feedforward.run import train_ff

    root = write_learnable_mnist(tmp_path / "data", n_train=240, n_test=60)
    m = train_ff(tiny_ff_config(root, method="backprop", iterations=20, eval_every=10, train_limit=100), tmp_path / "run")
    assert m["dataset"]["n_val"] == 48 and m["dataset"]["n_train"] == 100 and m["dataset"]["n_test"] == 60
    assert len(m["curves"]["val_error"]) == len(m["curves"]["test_error"]) == 2
    assert m["final"]["val_error"] == m["curves"]["val_error"][-1] and 0 <= m["final"]["val_error"] <= 100
