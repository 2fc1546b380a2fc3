"""MNIST and CIFAR-10 as uint8 tensors, read from local copies (torchvision only to download), and
the split every run uses: a fixed stratified validation hold-out of the training set, and subsets
(train_limit, test_limit, the probe batch) that hold every class (docs/statistics.md).

Data roots may be read-only shared folders, so nothing is written under a root unless the user
asked for --download; decoded JPEG copies of CIFAR-10 are cached in a separate cache dir.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import pickle
import struct
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from .catalog import DATASETS
from .runtime import RunError, atomic_torch_save, unreadable_text

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
# (split, images file, labels file), named as torchvision keeps them in <root>/MNIST/raw/
MNIST_FILES = (("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
CIFAR_BATCHES = "cifar-10-batches-py"  # torchvision's extracted python pickles
CIFAR_JPEG = "cifar10-jpeg"            # image-folder tree; the tarball is CIFAR_JPEG + ".tar.gz"
JPEG_EXT = (".jpg", ".jpeg")
CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y")
CACHE_VERSION = 1  # bump when the decoding or the cached layout changes, so old caches are not reused


class DataNotFoundError(RunError):
    """The data set is missing, incomplete or corrupt; the message says how to provide it."""


class DataPermissionError(RunError):
    """A data file the user may not read: said as that, never as missing or corrupt data."""


@dataclass(frozen=True, eq=False)  # eq=False: == on tensor fields would be ambiguous
class ImageData:
    name: str                 # variant actually loaded: "mnist", "cifar10" or "cifar10-jpeg"
    source: str               # the path it was read from
    train_x: torch.Tensor     # uint8 (N, C, H, W)
    train_y: torch.Tensor     # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int = 10

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


def as_input(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float inputs in [0, 1], the paper's only preprocessing."""
    return x_u8.float().div_(255)


def resolve_data_root(cli_root: str | os.PathLike | None = None) -> Path:
    """Explicit argument > $SGBENCH_DATA > ./data (relative to the working directory)."""
    if cli_root is not None and str(cli_root) != "":
        return Path(cli_root).expanduser()
    env = os.environ.get("SGBENCH_DATA")
    return Path(env).expanduser() if env else Path("data")


def resolve_cache_dir() -> Path:
    """$SGBENCH_CACHE, else ~/.cache/sgbench: never the data root, which may be read-only."""
    env = os.environ.get("SGBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sgbench"


@contextmanager
def _reading(where):
    """Turn any low-level failure while reading `where` into a DataNotFoundError naming it."""
    try:
        yield
    except (DataNotFoundError, DataPermissionError):
        raise
    except PermissionError as e:
        raise DataPermissionError(unreadable_text(e.filename or where)) from e
    except Exception as e:  # gzip/zlib/pickle/PIL/tarfile each raise their own zoo of exceptions
        raise DataNotFoundError(f"{where}: unreadable ({type(e).__name__}: {e})") from e


def _help(dataset: str, root: Path, looked_for: list[str], problem: str) -> DataNotFoundError:
    """The one error users see: what is wrong, where we looked, and both ways to fix it."""
    return DataNotFoundError("\n".join([
        f"{dataset}: {problem}",
        f"Data root searched: {root} (resolved: {root.resolve()})",
        "Looked for:", *(f"  - {p}" for p in looked_for),
        "To provide it, either:",
        "  (a) rerun with --download (where internet exists; torchvision fetches it into the data root), or",
        "  (b) point --data-root or the SGBENCH_DATA environment variable at a folder holding an "
        "offline copy in one of the layouts above."]))


def _corrupt(dataset: str, e: DataNotFoundError) -> DataNotFoundError:
    """One line for a data file that is there but damaged (truncated, wrong format): the fix is a good
    copy of that file, not where to look for the data set."""
    return DataNotFoundError(f"{dataset}: data is corrupt: {' '.join(str(e).split())}; replace that file with a good "
                             "copy (--download fetches the data set where internet exists)")


def _download(key: str, root: Path) -> None:
    import torchvision  # slow import, and only needed here
    cls = torchvision.datasets.MNIST if key == "mnist" else torchvision.datasets.CIFAR10
    log.info("downloading %s into %s via torchvision", key, root)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:
        raise DataNotFoundError(f"{key}: download into {root} failed ({type(e).__name__}: {e}). Offline, "
                                "point --data-root or SGBENCH_DATA at an offline copy instead.") from e


def _idx_path(d: Path, stem: str) -> Path | None:
    for p in (d / stem, d / f"{stem}.gz"):  # plain first: torchvision keeps both after a download
        if p.is_file():
            return p
    return None


def _find_mnist(root: Path) -> Path | None:
    # canonical <root>/MNIST/raw first, then forgive a root that is the MNIST/ or raw/ folder itself
    for d in (root / "MNIST" / "raw", root / "raw", root):
        if all(_idx_path(d, f) for _, *files in MNIST_FILES for f in files):
            return d
    return None


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    with _reading(path):
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            buf = f.read()  # a truncated .gz raises EOFError here
        head = 4 + 4 * ndim
        if len(buf) < head:
            raise DataNotFoundError(f"{path}: truncated header ({len(buf)} bytes)")
        got, *dims = struct.unpack(f">{ndim + 1}I", buf[:head])  # IDX is big-endian
        if got != magic:
            raise DataNotFoundError(f"{path}: bad magic number {got} (expected {magic})")
        body = np.frombuffer(memoryview(buf)[head:], dtype=np.uint8)
        if body.size != int(np.prod(dims)):
            raise DataNotFoundError(f"{path}: {body.size} data bytes do not fit header dims {dims}")
        return body.reshape(dims).copy()  # copy: frombuffer arrays are read-only


def _read_mnist(d: Path) -> list[torch.Tensor]:
    out = []
    for _, img_stem, lbl_stem in MNIST_FILES:
        ip, lp = _idx_path(d, img_stem), _idx_path(d, lbl_stem)
        x, y = _read_idx(ip, 2051, 3), _read_idx(lp, 2049, 1)
        if x.shape[1:] != (28, 28):
            raise DataNotFoundError(f"{ip}: images are {x.shape[1]}x{x.shape[2]}, expected 28x28")
        if len(x) == 0 or len(x) != len(y) or y.max(initial=0) > 9:
            raise DataNotFoundError(f"{ip} holds {len(x)} images but {lp} holds {len(y)} labels "
                                    f"(largest {y.max(initial=0)}, expected 0..9)")
        out += [torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))]
    return out


def _load_mnist(root: Path, download: bool) -> ImageData:
    canon = root / "MNIST" / "raw"
    looked = [f"{canon / f}[.gz]" + ("" if _idx_path(canon, f) else "  (missing)")
              for _, *files in MNIST_FILES for f in files]
    looked.append(f"(also accepted: the same four files directly in {root / 'raw'} or {root})")
    d = _find_mnist(root)
    if d is None and download:
        _download("mnist", root)
        d = _find_mnist(root)
    if d is None:
        raise _help("MNIST", root, looked, "data set not found (no folder with all four IDX files)")
    try:
        return ImageData("mnist", str(d), *_read_mnist(d))
    except DataNotFoundError as e:
        raise _corrupt("MNIST", e) from e


def _read_cifar_batches(d: Path) -> list[torch.Tensor]:
    out = []
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        xs, ys = [], []
        for p in (d / n for n in names):
            if not p.is_file():
                raise DataNotFoundError(f"{p}: missing (part of the {split} split)")
            with _reading(p), open(p, "rb") as f:
                batch = pickle.load(f, encoding="bytes")  # trusted local file, as torchvision reads it
                xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
            if len(xs[-1]) != len(ys[-1]) or not np.isin(ys[-1], range(10)).all():
                raise DataNotFoundError(f"{p}: {len(xs[-1])} images vs {len(ys[-1])} labels, or labels not in 0..9")
        out += [torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))]
    return out


def _decode_jpeg(data: bytes, where: str) -> np.ndarray:
    """One JPEG -> uint8 HWC array. Module-level so tests can swap it to prove the cache is used."""
    with _reading(where), Image.open(io.BytesIO(data)) as im:
        a = np.asarray(im.convert("RGB"))
    if a.shape != (32, 32, 3):
        raise DataNotFoundError(f"{where}: image is {a.shape[1]}x{a.shape[0]}, expected 32x32")
    return a


def _tree_files(tree: Path):
    """(split, class, file, bytes, shown name) for every <tree>/<split>/<class>/*.jpg."""
    for p in tree.glob("*/*/*"):
        if p.parts[-3] in SPLITS and p.suffix.lower() in JPEG_EXT:
            yield (*p.parts[-3:], p.read_bytes(), str(p))


def _tar_files(path: Path):
    """Same as _tree_files, streamed from a .tar.gz in one pass with nothing extracted to disk."""
    with tarfile.open(path, "r|gz") as tf:
        for m in tf:
            parts = PurePosixPath(m.name).parts[-3:]  # [-3:] also forgives a wrapping top-level folder
            if m.isfile() and len(parts) == 3 and parts[0] in SPLITS and parts[2].lower().endswith(JPEG_EXT):
                yield (*parts, tf.extractfile(m).read(), f"{path}:{m.name}")


def _decode_all(files, where: str) -> list[torch.Tensor]:
    """(split, class, file, bytes, shown) items -> [train_x, train_y, test_x, test_y]."""
    samples = {s: [] for s in SPLITS}
    with _reading(where):
        for split, cls, fname, data, shown in files:
            samples[split].append((cls, fname, _decode_jpeg(data, shown)))
    # label = index of the class folder in sorted order, which is CIFAR-10's own label order
    classes = sorted({c for c, _, _ in samples["train"]})
    if len(classes) != 10:
        raise DataNotFoundError(f"{where}: train/ has {len(classes)} classes {classes}, expected 10")
    out = []
    for split in SPLITS:
        items = sorted(samples[split], key=lambda s: s[:2])  # by class then file name: deterministic
        if not items:
            raise DataNotFoundError(f"{where}: no images in the {split} split")
        if sorted({c for c, _, _ in items}) != classes:
            raise DataNotFoundError(f"{where}: {split}/ classes differ from train/ classes {classes}")
        x = torch.from_numpy(np.stack([a for _, _, a in items])).permute(0, 3, 1, 2).contiguous()
        out += [x, torch.tensor([classes.index(c) for c, _, _ in items], dtype=torch.int64)]
    return out


def _cache_key(src: Path) -> str:
    src = src.resolve()
    if src.is_file():
        st = src.stat()
        sig = [st.st_size, st.st_mtime_ns]
    else:  # tree: entry count + mtime per class dir catches added/removed files without stat-ing 60k files
        sig = [(f"{s}/{c.name}", len(os.listdir(c)), c.stat().st_mtime_ns)
               for s in SPLITS if (src / s).is_dir() for c in sorted((src / s).iterdir()) if c.is_dir()]
    return hashlib.sha256(json.dumps([CACHE_VERSION, str(src), sig]).encode()).hexdigest()[:16]


def _load_cache(path: Path) -> list[torch.Tensor] | None:
    try:
        d = torch.load(path, weights_only=True)
        t = [d[k] for k in CACHE_KEYS]
        if [x.dtype for x in t] != [torch.uint8, torch.int64] * 2 or len(t[0]) != len(t[1]):
            raise ValueError("unexpected tensor dtypes or lengths")
        return t
    except Exception as e:  # half-written, truncated or foreign file: rebuilding is always safe
        log.warning("ignoring unreadable cache %s (%s: %s); rebuilding it", path, type(e).__name__, e)
        return None


def _save_cache(path: Path, tensors: list[torch.Tensor]) -> None:
    try:  # atomic: a concurrent reader sees no file or the complete file
        atomic_torch_save(path, dict(zip(CACHE_KEYS, tensors)))
        log.info("cached decoded tensors at %s", path)
    except OSError as e:  # an unwritable cache only costs speed next time
        log.warning("could not write cache %s: %s", path, e)


def _load_jpeg(src: Path, cache_dir: Path) -> ImageData:
    with _reading(src):
        cache = cache_dir / f"cifar10-jpeg-{_cache_key(src)}.pt"
    tensors = _load_cache(cache) if cache.is_file() else None
    if tensors is not None:
        log.info("reading decoded CIFAR-10 JPEGs of %s from cache %s", src, cache)
    else:
        log.info("decoding CIFAR-10 JPEGs from %s (slow once; cached at %s)", src, cache)
        tensors = _decode_all(_tar_files(src) if src.is_file() else _tree_files(src), str(src))
        _save_cache(cache, tensors)
    return ImageData("cifar10-jpeg", str(src), *tensors)


def _load_cifar(key: str, root: Path, download: bool, cache_dir: Path) -> ImageData:
    batches, tree, tar = root / CIFAR_BATCHES, root / CIFAR_JPEG, root / f"{CIFAR_JPEG}.tar.gz"
    looked = [f"{tree}/{{train,test}}/<class>/*.jpg  (lossy JPEG copy, loaded as cifar10-jpeg)",
              f"{tar}  (holding train/<class>/*.jpg and test/<class>/*.jpg)"]
    if key == "cifar10":
        looked.insert(0, f"{batches}/{{data_batch_1..5,test_batch}}  (original python batches)")
        if download and not any(s.exists() for s in (batches, tree, tar)):  # a local copy of either kind wins
            _download("cifar10", root)
    try:
        if key == "cifar10" and batches.is_dir():
            return ImageData("cifar10", str(batches), *_read_cifar_batches(batches))
        for src in (s for s in (tree, tar) if s.is_dir() or s.is_file()):
            if key == "cifar10":
                log.warning("original CIFAR-10 batches not found; using the lossy JPEG copy %s", src)
            return _load_jpeg(src, cache_dir)
    except DataNotFoundError as e:
        raise _corrupt(key, e) from e
    note = " (--download fetches only the original, as 'cifar10')" if key == "cifar10-jpeg" else ""
    raise _help(key, root, looked, f"data set not found{note}")


def load_dataset(name: str, root=None, *, download: bool = False, cache_dir=None) -> ImageData:
    """Load `name` ("mnist", "cifar10" or "cifar10-jpeg") from `root` (see resolve_data_root)."""
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    root = resolve_data_root(root)
    if key == "mnist":
        return _load_mnist(root, download)
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else resolve_cache_dir()
    return _load_cifar(key, root, download, cache_dir)


# ---------------------------------------------------------------- validation hold-out and subsets

# The hold-out: VAL_SIZE training images (a fifth of a smaller training set), every class in its share
# of the training set, the same images in every run (SPLIT_SEED is fixed, independent of the run seed).
VAL_SIZE = 10_000
SPLIT_SEED = 20_170_301


def stratified_order(labels: torch.Tensor, seed: int = SPLIT_SEED) -> torch.Tensor:
    """A fixed order of the indices of `labels` whose every prefix holds each class in its share of
    the whole (to within one image): each class's images in a seeded random order, interleaved by
    their position within their class. So the first N of a class-sorted file (the JPEG copy of
    CIFAR-10) are not all one class."""
    g = torch.Generator().manual_seed(seed)
    position = torch.empty(len(labels), dtype=torch.float64)
    for c in labels.unique(sorted=True):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        position[idx] = (torch.arange(len(idx), dtype=torch.float64) + 0.5) / len(idx)
    by_class = torch.argsort(labels, stable=True)  # equal positions (classes of equal size): class order
    return by_class[torch.argsort(position[by_class], stable=True)]


def default_val_size(n_train: int) -> int:
    return min(VAL_SIZE, n_train // 5)


@dataclass(frozen=True, eq=False)
class Split:
    """What one run trains, validates and tests on (uint8 images, int64 labels)."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def split(data: ImageData, train_limit: int = 0, test_limit: int = 0, val_size: int | None = None) -> Split:
    """The validation hold-out (the first val_size of the training set's stratified order; None: the
    default, 0: none) and the rest for training, in that order, so the first N training images (the
    probe batch) hold every class too; train_limit / test_limit keep the first N of the stratified
    orders (0: all; the limit is applied after the hold-out, which never trains)."""
    n = len(data.train_y)
    val_size = default_val_size(n) if val_size is None else val_size
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}) for {data.name} ({n} training images), got {val_size}")
    order = stratified_order(data.train_y)
    val, train = order[:val_size], order[val_size:]
    if train_limit:
        train = train[:train_limit]
    test = stratified_order(data.test_y)[:test_limit] if test_limit else torch.arange(len(data.test_y))
    return Split(data.train_x[train], data.train_y[train], data.train_x[val], data.train_y[val],
                 data.test_x[test], data.test_y[test])
