"""Run `sgbench ARGS...` with one fault armed (used by tests/test_faults.py in a child process).

    python tests/fault_driver.py FAULT ARG sgbench-args...

FAULT / ARG:
  SIGKILL N           the process kills itself (SIGKILL) as training step N begins
  SIGINT N            Ctrl-C as training step N begins
  SIGKILL-in-write F:K  the K-th atomic write of file F stops half-way through its bytes: SIGKILL
  ENOSPC-in-write F:K   the same write fails half-way as on a full disk (OSError ENOSPC)
  ENOSPC-in-torch-save F:K  the disk fills up inside the K-th torch.save of F: the file's write
                      raises ENOSPC after 1,000 bytes, and torch.save turns that into its own
                      RuntimeError ("unexpected pos"), as on a real full disk
  read-only -         every file or folder made under --out is refused (EACCES), as in a folder the
                      user cannot write; simulated because tests may run as root
"""
from __future__ import annotations

import builtins
import errno
import importlib
import io
import os
import signal
import sys
import tempfile
from pathlib import Path

RUNNER = "sgbench.families.feedforward.run"
RUNTIME = "sgbench.runtime"


def at_step(n: int, action) -> None:
    """Call action() as the n-th training step begins (the runner's train_step)."""
    run = importlib.import_module(RUNNER)
    original, calls = run.train_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            action()
        return original(*args, **kwargs)
    run.train_step = step


def on_kth_write(target: str, wrap) -> None:
    """The K-th atomic write of file F (target "F:K") writes through wrap(write) instead of write."""
    runtime = importlib.import_module(RUNTIME)
    name, k = target.split(":")
    original, seen = runtime.atomic_write, [0]

    def atomic_write(path, write):
        if Path(path).name == name:
            seen[0] += 1
            if seen[0] == int(k):
                return original(path, wrap(path, write))
        return original(path, write)
    runtime.atomic_write = atomic_write


def in_write(target: str, action) -> None:
    """Make the k-th atomic write of file `name` write half its bytes, then call action(path)."""
    def half_then_action(path, write):
        def half(f):
            buf = io.BytesIO()
            write(buf)
            f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
            f.flush()
            action(path)
        return half
    on_kth_write(target, half_then_action)


class FillsUp:
    """A file whose disk is full after `room` bytes: write() raises ENOSPC (tell, flush, ... pass through)."""

    def __init__(self, f, room: int = 1000):
        self.f, self.room = f, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def full_in_torch_save(target: str) -> None:
    """The K-th atomic write of file F (F:K) hits a full disk inside torch.save."""
    on_kth_write(target, lambda path, write: lambda f: write(FillsUp(f)))


def read_only(out: Path) -> None:
    """Refuse to create anything under `out` (which exists, empty)."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    def refuse(path):
        if Path(path).resolve().is_relative_to(out):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    real_open, real_mkstemp = builtins.open, tempfile.mkstemp

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_mkstemp(suffix=None, prefix=None, dir=None, text=False):
        refuse(Path(dir or tempfile.gettempdir()) / "x")
        return real_mkstemp(suffix, prefix, dir, text)
    builtins.open, tempfile.mkstemp = guarded_open, guarded_mkstemp


def kill(sig):
    return lambda *_: os.kill(os.getpid(), sig)


def enospc(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def main() -> int:
    fault, arg, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if fault in ("SIGKILL", "SIGINT"):
        at_step(int(arg), kill(getattr(signal, fault)))
    elif fault == "SIGKILL-in-write":
        in_write(arg, kill(signal.SIGKILL))
    elif fault == "ENOSPC-in-write":
        in_write(arg, enospc)
    elif fault == "ENOSPC-in-torch-save":
        full_in_torch_save(arg)
    elif fault == "read-only":
        read_only(Path(args[args.index("--out") + 1]))
    else:
        raise SystemExit(f"unknown fault {fault!r}")
    from sgbench.cli import main as sgbench
    return sgbench(args)


if __name__ == "__main__":
    sys.exit(main())
