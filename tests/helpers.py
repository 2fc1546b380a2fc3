"""Fixture writers shared by the tests: tiny data sets in torchvision's on-disk layouts."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, arr: np.ndarray, magic: int | None = None) -> None:
    """Write `arr` (uint8) as an IDX file; gzip it when the name ends in .gz."""
    magic = magic if magic is not None else {1: 2049, 3: 2051}[arr.ndim]
    blob = struct.pack(f">{arr.ndim + 1}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(blob)


def write_learnable_mnist(root: Path, n_train: int = 512, n_test: int = 200, seed: int = 0) -> Path:
    """A tiny MNIST-shaped set a net can learn: class k lights up row band k, plus noise."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            x[i, 2 * k + 4: 2 * k + 6, 4:24] = 255
        write_idx(raw / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(raw / f"{split}-labels-idx1-ubyte.gz", y)
    return root


def write_tiny_corpus(root: Path, name: str = "shakespeare-gutenberg", works: int = 12, seed: int = 0) -> Path:
    """A generated stand-in for a text corpus in the offline tarball's layout (a folder of <work>_gut.txt
    files plus metadata.txt) under root/<name>/: words from a small alphabet, so a char-LM can learn."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("etaoinshrdlu"), rng.integers(2, 7))) for _ in range(60)]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.txt").write_text("generated test corpus\n")
    for w in range(works):
        lines = [" ".join(rng.choice(words, 8)).capitalize() + "." for _ in range(40)]
        (folder / f"work_{w:02d}_gut.txt").write_text("\n".join(lines) + "\n")
    return root


def tiny_ff_config(data_root, **kw):
    """A feed-forward run on the tiny MNIST fixture that takes a second: FCN-2 DNI, 40 iterations, small SGs."""
    from sgbench.families.feedforward.config import FFConfig
    base = dict(dataset="mnist", layers=2, method="dni", iterations=40, batch_size=32, lr=1e-3, eval_every=10,
                sg_hidden_layers=1, sg_hidden_dim=32, data_root=str(data_root), device="cpu", tier="smoke")
    return FFConfig(**(base | kw))


def make_unreadable(monkeypatch, path: Path) -> None:
    """Opening `path` fails with EACCES, as for a user without read permission on it. Simulated: tests
    may run as root, whom file permissions do not stop. Covers open(), Path.read_bytes (io.open), gzip
    tarfile (its own reference to the built-in open) and os.open."""
    import builtins
    import errno
    import io
    import os
    import tarfile
    denied, real_open = Path(path).resolve(), builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)
    real_os_open = os.open

    def guarded_os_open(file, *args, **kwargs):  # tarfile's streaming mode ("r|gz") opens with os.open
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_os_open(file, *args, **kwargs)
    for module, name in ((builtins, "open"), (io, "open"), (tarfile, "bltn_open")):
        monkeypatch.setattr(module, name, guarded)
    monkeypatch.setattr(os, "open", guarded_os_open)
