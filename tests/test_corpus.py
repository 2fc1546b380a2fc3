"""Character-level corpora: tarball / folder / single file / PTB layout, the split by work, clear errors."""
import io
import tarfile

import pytest
import torch
from helpers import make_unreadable, write_tiny_corpus

from sgbench.corpus import CorpusError, load_corpus, split_works


def works(n):
    return {f"work_{i:02d}.txt": f"Text of work {i}.\nIt has a second line, and {chr(65 + i % 26)}.\n" for i in range(n)}


def write_folder(root, files):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "metadata.txt").write_text("[work_00]\nurl = nowhere\n")
    return root


def write_tar(path, files, folder="tiny"):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {**files, "metadata.txt": "not a work"}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_split_by_work_is_sorted_and_every_tenth():
    names = [f"w{i:02d}" for i in range(42)][::-1]  # order given does not matter
    split = split_works(names)
    assert split["valid"] == ["w07", "w17", "w27", "w37"] and split["test"] == ["w08", "w18", "w28", "w38"]
    assert len(split["train"]) == 34 and not set(split["train"]) & set(split["valid"] + split["test"])


def test_tarball_and_folder_give_the_same_corpus_named_after_themselves(tmp_path):
    files = works(20)
    a = load_corpus(str(write_tar(tmp_path / "tiny.tar.gz", files)))
    b = load_corpus(str(write_folder(tmp_path / "tiny", files)))
    assert a.name == b.name == "tiny"
    assert (a.train, a.valid, a.test, a.vocab) == (b.train, b.valid, b.test, b.vocab)
    assert a.works["valid"] == ["work_07", "work_17"] and a.works["test"] == ["work_08", "work_18"]
    assert "Text of work 7." in a.valid and "Text of work 7." not in a.train and "not a work" not in a.train


def test_names_resolve_in_the_data_root(tmp_path, monkeypatch):
    write_tar(tmp_path / "tiny.tar.gz", works(10))
    monkeypatch.setenv("SGBENCH_DATA", str(tmp_path))
    c = load_corpus("tiny")
    assert c.name == "tiny" and c.source == str(tmp_path / "tiny.tar.gz")


def test_single_file_is_split_by_position_at_line_boundaries(tmp_path):
    text = "".join(f"line {i:03d} of the only text\n" for i in range(200))
    path = tmp_path / "book.txt"
    path.write_text(text)
    c = load_corpus(str(path))
    assert c.name == "book" and c.train + c.valid + c.test == text
    assert c.train.endswith("\n") and c.valid.endswith("\n")
    assert len(c.train) == pytest.approx(0.9 * len(text), rel=0.02) and len(c.test) > 0


def test_encode_maps_unseen_characters_to_the_unknown_id(tmp_path):
    files = works(10)
    files["work_08.txt"] = "only in test: ~\n"  # work 8 is the test split
    c = load_corpus(str(write_folder(tmp_path / "t", files)))
    assert "~" not in c.vocab and c.vocab_size == len(c.vocab) + 1
    ids = c.encode("T~")
    assert ids.dtype == torch.long and ids.tolist() == [c.vocab.index("T"), len(c.vocab)]


def ptb_fixture(root):
    """Files in PTB's character layout: characters separated by spaces, '_' between words."""
    root.mkdir(parents=True)
    for split, sentence in (("train", "the cat sat"), ("valid", "a dog ran"), ("test", "no cat")):
        line = " ".join("_" if ch == " " else ch for ch in sentence)
        (root / f"ptb.char.{split}.txt").write_text(f" {line}\n {line}\n")


def test_ptb_layout_is_read_with_its_own_split_and_name(tmp_path):
    ptb_fixture(tmp_path / "ptb")
    c = load_corpus("ptb", tmp_path)
    assert c.name == "ptb" and c.train == "the cat sat\nthe cat sat\n" and c.valid == "a dog ran\na dog ran\n"
    assert c.test == "no cat\nno cat\n"


def test_ptb_missing_offline_says_how_to_get_it(tmp_path):
    with pytest.raises(CorpusError, match="Rerun with --download where internet exists"):
        load_corpus("ptb", tmp_path)


@pytest.mark.parametrize("make,message", [
    (lambda p: p, "not found"),
    (lambda p: write_folder(p / "two", works(2)), "needs at least 3"),
    (lambda p: (p / "bin.txt").write_bytes(b"\x00\x01\x02") and p / "bin.txt", "not a text file"),
    (lambda p: (p / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1")) and p / "latin.txt", "not UTF-8"),
    (lambda p: (p / "bad.tar.gz").write_bytes(b"this is no tarball") and p / "bad.tar.gz", "not a readable tar"),
    (lambda p: (p / "empty.txt").write_text("") or p / "empty.txt", "split is empty"),
])
def test_a_bad_corpus_is_one_clear_error(tmp_path, make, message):
    target = make(tmp_path / "missing" if message == "not found" else tmp_path)
    with pytest.raises(CorpusError, match=message) as e:
        load_corpus(str(target))
    assert "Pass a .tar.gz of text files" in str(e.value) or "ptb" in str(e.value)


def test_a_corpus_name_is_looked_up_in_the_data_root(tmp_path):
    write_tiny_corpus(tmp_path)
    c = load_corpus("shakespeare-gutenberg", tmp_path)  # the folder <data root>/<name>/, split by work
    assert c.name == "shakespeare-gutenberg" and len(c.works["valid"]) == 1 and len(c.works["test"]) == 1
    with pytest.raises(CorpusError, match="not found"):
        load_corpus("shakespeare-sonnets", tmp_path)  # nothing ships with sgbench


@pytest.mark.parametrize("cut", [0.3, 0.6])
def test_a_truncated_tarball_is_one_error_naming_it(tmp_path, cut):
    """Issue #25 item 2: `head -c N corpus.tar.gz` (cut in the compressed stream: EOFError from gzip,
    which _read_tar did not catch) is one error that names the file and says it may be truncated."""
    tar = tmp_path / "tiny.tar.gz"
    write_tar(tar, works(12))
    blob = tar.read_bytes()
    tar.write_bytes(blob[:int(len(blob) * cut)])
    with pytest.raises(CorpusError) as e:
        load_corpus(str(tar))
    assert str(tar) in str(e.value) and "truncated or damaged" in str(e.value) and "\n" not in str(e.value)


def test_a_truncated_plain_tar_is_one_error(tmp_path):
    tar = tmp_path / "tiny.tar"
    with tarfile.open(tar, "w") as t:
        for name, text in works(12).items():
            info = tarfile.TarInfo(f"tiny/{name}")
            info.size = len(text.encode())
            t.addfile(info, io.BytesIO(text.encode()))
    tar.write_bytes(tar.read_bytes()[:1000])
    with pytest.raises(CorpusError, match="truncated or damaged"):
        load_corpus(str(tar))


@pytest.mark.parametrize("layout", ["tarball", "folder", "single"])
def test_a_corpus_file_the_user_may_not_read_is_a_permission_error(tmp_path, monkeypatch, layout):
    """Issue #25 item 5: named as a permission problem with its path, not as a damaged corpus (nor as an
    unwritable --out, as the command line's OSError handler said)."""
    if layout == "tarball":
        target = denied = tmp_path / "tiny.tar.gz"
        write_tar(target, works(12))
    elif layout == "folder":
        target = write_folder(tmp_path / "tiny", works(12))
        denied = target / "work_03.txt"
    else:
        target = denied = tmp_path / "one.txt"
        target.write_text("line\n" * 100)
    make_unreadable(monkeypatch, denied)
    with pytest.raises(CorpusError) as e:
        load_corpus(str(target))
    assert str(e.value).startswith(f"cannot read {denied}: permission denied (a permission problem, not damaged")
