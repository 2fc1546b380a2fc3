"""Run I/O shared by every family: atomic files, schema checks, run metadata, the device, progress lines.

Torch is imported inside the functions that need it, so the analysis layer can use the writers
without loading torch."""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata as importlib_metadata
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Callable


class RunError(RuntimeError):
    """A run cannot go on (missing data, a failed worker, ...): the command line prints the message, which
    names the fix, as one line instead of a traceback."""


class MetricsError(ValueError):
    """A metrics file that cannot be used; the message names it and the fix."""


def progress_line(done: int, total: int, elapsed: float, detail: str) -> str:
    """'step 300/1000 ( 30%) <detail> | 12.3 steps/s, ETA 1m00s': the runners' periodic log line."""
    rate = done / elapsed if elapsed else 0.0
    eta = (total - done) / rate if rate else 0.0
    return f"step {done}/{total} ({100 * done / total:3.0f}%) {detail} | {rate:.1f} steps/s, ETA {format_duration(eta)}"


def start_run(cfg, out_dir):
    """What every runner does first: make the run folder, set CPU threads, pick the device, record
    the metadata (now, so the git commit is that of the code this run loaded), seed torch.
    Returns (out_dir as a Path, device, metadata)."""
    import torch
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    meta = run_metadata(device)
    torch.manual_seed(cfg.seed)
    return out_dir, device, meta


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """write(f) into a temp file in the same folder, then rename: a killed run never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode())


def atomic_torch_save(path, obj) -> None:
    import torch
    atomic_write(path, lambda f: torch.save(obj, f))


def load_schema(name: str) -> dict:
    return json.loads(resources.files("sgbench.schemas").joinpath(f"{name}.schema.json").read_text())


def validate(obj: dict, schema_name: str) -> None:
    """Raise jsonschema.ValidationError if `obj` does not follow sgbench/schemas/<name>.schema.json."""
    import jsonschema
    jsonschema.validate(obj, load_schema(schema_name))


def resolve_device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} asked for, but CUDA is not available here; use --device auto or cpu")
    return device


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_metadata(device) -> dict:
    """Versions, hardware, git commit and host: enough to tell where a number came from."""
    import torch
    hardware = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
    return {
        "sgbench_version": _version("sgbench"),
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "numpy": _version("numpy"),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "hardware": hardware,
        "command": " ".join(sys.argv),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
