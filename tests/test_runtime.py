"""sgbench.runtime: atomic writes with the user's umask, stale temp files, the run-folder lock, the
device check, JSON without NaN and the divergence watch (issue #18, items 1, 5, 8)."""
import errno
import json
import math
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sgbench import runtime

from fault_driver import FillsUp  # a file on a disk that is full after 1,000 bytes (one helper for both)

ROOT = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test (the writers read it; restored after)."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mask, want):
    """Before: every result was 0600 (mkstemp's mode) whatever the umask."""
    umask(mask)
    assert runtime.current_umask() == mask
    runtime.atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    runtime.atomic_write_bytes(tmp_path / "table.csv", b"x\n")
    runtime.atomic_torch_save(tmp_path / "checkpoint.pt", {"w": torch.zeros(2)})
    for name in ("metrics.json", "table.csv", "checkpoint.pt"):
        assert mode(tmp_path / name) == want, name


def test_data_cache_respects_the_umask(tmp_path, umask):
    from sgbench import data
    umask(0o002)
    path = tmp_path / "cache" / "cifar10-jpeg-x.pt"
    data._save_cache(path, [torch.zeros(1, dtype=torch.uint8)] * len(data.CACHE_KEYS))
    assert mode(path) == 0o664


def test_a_failed_write_leaves_neither_file_nor_temp(tmp_path):
    def full_disk(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError):
        runtime.atomic_write(tmp_path / "metrics.json", full_disk)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_survives_a_failed_rewrite(tmp_path):
    runtime.atomic_write_bytes(tmp_path / "metrics.json", b"old")
    with pytest.raises(RuntimeError):
        runtime.atomic_write(tmp_path / "metrics.json", lambda f: (f.write(b"new"), (_ for _ in ()).throw(RuntimeError())))
    assert (tmp_path / "metrics.json").read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_stale_temps_of_run_files_are_removed_and_nothing_else(tmp_path):
    stale = [tmp_path / ".checkpoint.pt.k2j3.tmp", tmp_path / ".metrics.json.9x.tmp"]
    kept = [tmp_path / "checkpoint.pt", tmp_path / ".other.csv.abc.tmp", tmp_path / "notes.tmp"]
    for p in stale + kept:
        p.write_bytes(b"x")
    assert sorted(runtime.remove_stale_temps(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_json_never_holds_nan(tmp_path):
    runtime.atomic_write_json(tmp_path / "m.json", {"a": [1.0, math.nan, math.inf], "b": {"c": -math.inf}, "d": 2})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1.0, None, None], "b": {"c": None}, "d": 2}


@pytest.mark.parametrize("name, message", [
    ("cuda", "--device cuda asked for, but CUDA is not available here"),
    ("cdua", "--device cdua: not a device name; use auto, cpu, cuda or cuda:N"),
])
def test_unavailable_device_is_a_value_error_naming_the_fix(name, message):
    if name == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(runtime.DeviceUnavailable, match=message.replace("(", r"\(")):
        runtime.resolve_device(name)


def test_nonfinite_watch_finds_the_first_bad_step_and_last_finite_loss():
    watch = runtime.NonFiniteWatch(torch.device("cpu"))
    for step, loss in enumerate([2.0, 1.5, math.inf, math.nan, 1.0], start=1):
        watch.observe(step, torch.tensor(loss))
    assert watch.diverged_at() == 3 and watch.last_finite_value() == 1.5 and watch.due(7)
    fresh = runtime.NonFiniteWatch(torch.device("cpu"))
    fresh.observe(1, torch.tensor(0.5))
    assert fresh.diverged_at() is None
    assert runtime.diverged_record(3, {"loss": 1.5, "x": math.nan}) == {"step": 3, "last_finite": {"loss": 1.5, "x": None}}


HOLD = """
import sys, time
from sgbench import runtime
with runtime.run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_run_lock_makes_a_second_process_wait_and_dies_with_its_holder(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True,
                              env=env)
    assert holder.stdout.readline().strip() == "locked"
    waiter = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "0"], stdout=subprocess.PIPE, text=True,
                              env=env)
    time.sleep(1.0)
    assert waiter.poll() is None, "the second process must wait while the first trains"
    holder.kill()  # SIGKILL: the kernel releases the lock, nothing stale is left
    holder.wait()
    assert waiter.wait(timeout=60) == 0 and "locked" in waiter.stdout.read()


def test_figures_are_written_atomically_with_the_umask(tmp_path, umask):
    import matplotlib.pyplot as plt

    from sgbench.analysis import plotting
    umask(0o002)
    plotting.save(plt.figure(), tmp_path / "fig")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "fig.png"]
    assert all(mode(p) == 0o664 and p.stat().st_size > 0 for p in tmp_path.iterdir())


LOGGED_HOLD = """
import sys, time
from sgbench import runtime
folder, hold, log, name = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
with runtime.run_lock(folder):
    open(log, "a").write(f"in {name}\\n")
    print("locked", flush=True)
    time.sleep(hold)
    open(log, "a").write(f"out {name}\\n")
"""


def test_run_lock_leaves_no_lock_file_and_still_keeps_runs_apart(tmp_path):
    """Issue #25 item 9: the holder deletes `.lock` as it finishes; a process that waited on the deleted
    file must not train beside a newcomer that locked a fresh `.lock`: the three hold it one at a time."""
    env, log, folder = dict(os.environ, PYTHONPATH=str(ROOT)), tmp_path / "log", tmp_path / "run"

    def hold(name, seconds):
        return subprocess.Popen([sys.executable, "-c", LOGGED_HOLD, str(folder), str(seconds), str(log), name],
                                stdout=subprocess.PIPE, text=True, env=env)
    first = hold("first", 3)
    assert first.stdout.readline().strip() == "locked"
    waiter = hold("waiter", 3)  # blocks on the first's .lock, which is deleted before it gets it
    time.sleep(1.0)
    assert first.wait(timeout=60) == 0
    newcomer = hold("newcomer", 0)
    assert waiter.wait(timeout=60) == 0 and newcomer.wait(timeout=60) == 0
    lines = log.read_text().split()
    names = lines[1::2]
    assert lines[0::2] == ["in", "out"] * 3 and names[0::2] == names[1::2], lines  # never two inside at once
    assert list(folder.iterdir()) == []  # no .lock left behind


def test_run_lock_removes_the_folders_it_made_when_the_run_left_them_empty(tmp_path):
    with pytest.raises(RuntimeError):
        with runtime.run_lock(tmp_path / "new" / "run"):
            raise RuntimeError("the data failed to load")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    with runtime.run_lock(tmp_path / "mine"):
        pass
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []  # the user's folder stays
    with runtime.run_lock(tmp_path / "done"):
        (tmp_path / "done" / "metrics.json").write_text("{}")
    assert [p.name for p in (tmp_path / "done").iterdir()] == ["metrics.json"]


def test_full_disk_inside_torch_save_is_the_os_error_naming_the_file(tmp_path, monkeypatch):
    """Issue #25 item 1: torch.save turns the failed write into RuntimeError ("unexpected pos");
    atomic_torch_save raises the OSError instead, naming the file, and the old file is untouched."""
    path = tmp_path / "checkpoint.pt"
    runtime.atomic_torch_save(path, {"step": 1})
    original = runtime.atomic_write
    monkeypatch.setattr(runtime, "atomic_write", lambda p, write: original(p, lambda f: write(FillsUp(f))))
    with pytest.raises(OSError) as e:
        runtime.atomic_torch_save(path, {"step": 2, "w": torch.zeros(10_000)})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert torch.load(path, weights_only=False) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
