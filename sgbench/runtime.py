"""Run I/O shared by every family: atomic files, schema checks, run metadata, the device, progress
lines, and what keeps a run safe from faults: the run-folder lock, stale temp files cleaned after a
kill, the divergence watch, JSON without NaN (docs/recovery.md).

Torch is imported inside the functions that need it, so the analysis layer can use the writers
without loading torch."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
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

# What a run folder holds; a kill during an atomic write of one of them leaves a temp file.
RUN_FILES = ("checkpoint.pt", "metrics.json")
TMP_SUFFIX = ".tmp"


class RunError(RuntimeError):
    """A run cannot go on (missing data, a failed worker, ...): the command line prints the message, which
    names the fix, as one line instead of a traceback."""


def unreadable_text(path) -> str:
    """One line for a data file the user may not read: a permission problem, not damaged data."""
    return (f"cannot read {path}: permission denied (a permission problem, not damaged data); get read access "
            "to it (chmod, or ask its owner), or copy the data to a folder you can read and point --data-root at it")


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
    remove_stale_temps(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    meta = run_metadata(device)
    torch.manual_seed(cfg.seed)
    return out_dir, device, meta


def check_precision(precision: str, device) -> None:
    """Refuse, before any training, a precision this device cannot run (tf32 exists only on CUDA)."""
    if precision == "tf32" and str(device).split(":")[0] != "cuda":
        raise ValueError(f"precision tf32 (TF32 matmuls) needs a CUDA device, and this run is on {device}: "
                         "use --precision bf16 (autocast, CPUs included) or fp32, or run on a GPU (--device cuda)")


@contextlib.contextmanager
def matmul_precision(precision: str):
    """Around a run's whole training (loop.train): TF32 matmuls and convolutions when `precision` is tf32,
    the process's flags restored after, so nothing outlives the run. A no-op for fp32 and bf16."""
    if precision != "tf32":
        yield
        return
    import torch
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(precision: str, device):
    """The one place a step's forward computation meets the run's precision (issue #26): bf16 is
    torch.autocast(bfloat16) on the device's type, CPU included; fp32 and tf32 run the forward as is
    (a null context, so fp32 stays bit for bit what it was). Only the forward goes inside: parameters,
    gradients and Adam's state stay fp32, and the backward runs outside, as torch recommends. The
    weight-cast cache is off because a cached cast cannot live inside a captured CUDA graph."""
    if precision != "bf16":
        return contextlib.nullcontext()
    import torch
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)


# What torchrun (torch.distributed.run) sets in each process it starts; a process launched by hand
# for a multi-node run sets the same five.
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclasses.dataclass(frozen=True)
class Launch:
    """This process's place in a run a launcher (torchrun) started: one process per worker."""
    rank: int
    world_size: int
    local_rank: int          # which GPU of its node it takes
    local_world_size: int    # processes on its node (torchrun's LOCAL_WORLD_SIZE; else 1)
    master_addr: str
    master_port: int


def launch_env(environ=None) -> Launch | None:
    """The launcher's record of this process, or None for a plain process (no RANK nor WORLD_SIZE set).
    Some of torchrun's variables set but not all, or not numbers, is an error naming them: half a
    launch would otherwise train alone, or wait for peers that never come."""
    env = os.environ if environ is None else environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None
    missing = [v for v in LAUNCH_VARS if not env.get(v)]
    if missing:
        raise ValueError(f"RANK / WORLD_SIZE are set but {', '.join(missing)} not: launch with torchrun, which sets "
                         f"all of {', '.join(LAUNCH_VARS)} (or unset RANK and WORLD_SIZE to run in one process)")
    try:
        rank, world, local, port = (int(env[v]) for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"))
        local_world = int(env.get("LOCAL_WORLD_SIZE") or 1)
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and MASTER_PORT must be whole numbers, got "
                         + ", ".join(f"{v}={env.get(v)!r}" for v in (*LAUNCH_VARS, "LOCAL_WORLD_SIZE"))) from None
    if not (0 <= rank < world and local >= 0 and 0 < port < 65536):
        raise ValueError(f"inconsistent launch: RANK {rank}, WORLD_SIZE {world}, LOCAL_RANK {local}, MASTER_PORT {port} "
                         "(need 0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0, a port 1-65535)")
    return Launch(rank, world, local, local_world, env["MASTER_ADDR"], port)


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status); elsewhere set and
    restored at once (os.umask has no read-only form)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """write(f) into a temp file in the same folder, then rename: a reader (or a killed run) never
    sees a half file, and a failed write (full disk) leaves none. The file gets the mode a plain
    open() would give (0666 minus the umask): mkstemp's 0600 would hide results from colleagues."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path, obj) -> None:
    """JSON has no NaN: non-finite floats are written as null (json_safe)."""
    atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=1, allow_nan=False) + "\n").encode())


def json_safe(obj):
    """`obj` with every non-finite float replaced by None (a diverged run's values are written as null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def remove_stale_temps(folder, names=RUN_FILES) -> list[Path]:
    """Delete the temp files a killed atomic write of `names` left in `folder` (never a finished
    file); returns them. Only for a folder one process owns (a run folder, under run_lock): in a
    shared folder another writer's temp file may be in flight."""
    removed = []
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def run_lock(out_dir, note: Callable[[str], object] = print):
    """Hold an exclusive lock on a run folder while a run trains in it, so that two processes never
    train the same run at once (e.g. an orphaned job of a killed Snakemake and its rerun). A second
    process waits for the first to finish (and then finds its finished run). The kernel drops the
    lock when its holder dies, even by SIGKILL: it is never stale. File systems without locks: none.

    Nothing is left for the user to clean: the holder deletes `.lock` before it lets go (a waiter
    that then gets the deleted file sees it is no longer the folder's `.lock` and locks a new one),
    and the folders this call made are removed again when the run left them empty (it failed
    before writing anything, e.g. at data loading). Only a killed holder leaves its `.lock`."""
    import fcntl
    out_dir = Path(out_dir)
    made = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # deepest first
    lock = out_dir / ".lock"
    f = None
    try:
        while f is None:
            out_dir.mkdir(parents=True, exist_ok=True)
            f = open(lock, "a+")
            try:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    note(f"another sgbench process is training in {out_dir}; waiting for it to finish")
                    fcntl.flock(f, fcntl.LOCK_EX)
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                    raise
            if not _is_file_at(f, lock):  # the holder we waited for deleted it as it finished
                f.close()
                f = None
        yield
    finally:
        if f is not None:
            lock.unlink(missing_ok=True)  # while still held, so no one locks it after us
            f.close()
        for folder in made:
            try:
                folder.rmdir()  # only an empty folder: a run's files are never touched
            except OSError:
                break


def _is_file_at(f, path: Path) -> bool:
    """Whether the open file `f` is the file now at `path`."""
    try:
        there, mine = os.stat(path), os.fstat(f.fileno())
    except FileNotFoundError:
        return False
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


class NonFiniteWatch:
    """Finds the first step whose loss is not finite (NaN or inf) and the last finite loss before it.

    The test runs on the device, so a GPU run is not synchronised every step: the host looks every
    `check_every` steps (and whenever the runner asks, e.g. before an evaluation); on a CPU, where
    looking is free and NaN steps are slow, every step."""

    def __init__(self, device, check_every: int = 50):
        import torch
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 0: none yet
        self.last_finite = torch.full((), float("nan"), device=device)
        self.check_every = 1 if torch.device(device).type == "cpu" else check_every

    def observe(self, step: int, value) -> None:
        """`value` (0-d tensor): the step's loss, or the sum of every loss the step trained on."""
        import torch
        finite, first = torch.isfinite(value), self.first_bad == 0
        self.last_finite = torch.where(finite & first, value.to(self.last_finite.dtype), self.last_finite)
        self.first_bad = torch.where(~finite & first, step, self.first_bad)

    def due(self, step: int) -> bool:
        return step % self.check_every == 0

    def diverged_at(self) -> int | None:
        """The first non-finite step (1-based), or None (synchronises with the device)."""
        return int(self.first_bad) or None

    def last_finite_value(self) -> float | None:
        value = float(self.last_finite)
        return value if math.isfinite(value) else None


# A finite loss this many times chance's (a uniform guess) is divergence too: the weights have blown up
# (copy at lr 1e12 logged 1.2e13 bits per sequence and "completed"), and the metrics such a run ends
# with are absurd, not a result of its method; the runners stop it as diverged.
ABSURD_LOSS = 1000.0


def absurd(loss: float, chance: float) -> bool:
    """A loss that is not finite, or beyond ABSURD_LOSS times `chance` (the loss of a uniform guess on
    the same outputs): the run diverged."""
    return not math.isfinite(loss) or loss > ABSURD_LOSS * chance


def diverged_record(step: int, last_finite: dict) -> dict:
    """metrics.json's "diverged" entry: the first non-finite step and the last finite values."""
    return {"step": int(step), "last_finite": json_safe(dict(last_finite))}


@contextlib.contextmanager
def step_memory(device, exclude=()):
    """Measure the memory one training step keeps for its backward pass; yields a dict that holds,
    after the block: `activation_memory_mb`, the bytes of every tensor autograd saved during the block
    (each storage once, the tensors in `exclude` -- the parameters -- not counted), and, on CUDA,
    `peak_memory_mb`, the device's allocation peak during the block (None elsewhere).

    The first is what grows with the length of the graph (truncated BPTT's window T). It is exact and
    repeatable on a given backend (it counts a kernel's workspace too: oneDNN's RNN workspace on a CPU,
    cuDNN's on a GPU, so it differs between the two); a CPU process's resident size is neither exact nor
    per step (the allocator keeps freed memory), so it is not used."""
    import torch
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return t  # unchanged: the hook only looks

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    out: dict = {}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield out
    out["activation_memory_mb"] = sum(saved.values()) / 2**20
    out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None


def atomic_torch_save(path, obj) -> None:
    """torch.save through atomic_write. A write that fails inside torch.save (a full disk) comes out
    as torch's RuntimeError ("unexpected pos ..."), the OSError only its context: raise that OSError,
    naming the file, so that every runner reports it as one line like any other failed write (the
    file already there is untouched: atomic_write removed its temp file)."""
    import torch
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except RuntimeError as e:
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise OSError(cause.errno, cause.strerror, str(path)) from e
        raise RunError(f"cannot write {path}: torch.save failed ({str(e).splitlines()[0].strip()}); a short write "
                       "means a full disk: free some space, then rerun the same command (it resumes)") from e


def load_checkpoint(path, device, expected: dict, note: Callable[[str], object],
                    as_recorded: Callable[[dict], dict] | None = None) -> dict | None:
    """The checkpoint at `path` when its entries named in `expected` equal them (the run's resolved
    config, or a seed group's config and seeds), else None: a missing, unreadable (e.g. written by an
    incompatible sgbench) or foreign checkpoint means starting afresh, said through `note`, never a
    crash and never a resume into another run. `as_recorded` (the config's RunConfig.as_recorded) reads
    the checkpoint's config as this code records the same run: a key added since holds the value every
    run then had, so a run killed before an upgrade still resumes."""
    import torch
    path = Path(path)
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        note(f"cannot read {path} ({e}): starting afresh")
        return None
    found = {k: ckpt.get(k) for k in expected}
    if as_recorded and isinstance(found.get("config"), dict):
        found["config"] = as_recorded(found["config"])
    if found != expected:
        note(f"{path} was made by another run ({', '.join(expected)} differ): starting afresh")
        return None
    return ckpt


def restore(ckpt: dict, stateful: dict) -> None:
    """Load each object of `stateful` ({name: object with load_state_dict}) from ckpt[name]."""
    for name, obj in stateful.items():
        obj.load_state_dict(ckpt[name])


def load_schema(name: str) -> dict:
    return json.loads(resources.files("sgbench.schemas").joinpath(f"{name}.schema.json").read_text())


def validate(obj: dict, schema_name: str) -> None:
    """Raise jsonschema.ValidationError if `obj` does not follow sgbench/schemas/<name>.schema.json."""
    import jsonschema
    jsonschema.validate(obj, load_schema(schema_name))


FINISHED = ("completed", "diverged", "complete")  # "complete": how older runs spelled completed


def finished_run(out: Path, config, family, fix: str) -> dict | None:
    """The finished metrics.json of this very run in `out`, or None when there is none or it is damaged
    (unreadable, truncated, not a finished run of `family`: then the run is trained again and the file
    replaced). A finished run of another config is an error naming each differing setting and `fix`:
    retraining would silently replace a result. `sgbench train-*` and `select-lr` both check with it."""
    path = Path(out) / "metrics.json"
    if not path.exists():
        return None
    try:
        metrics = json.loads(path.read_text())
        validate(metrics, family.schema)
    except Exception as e:  # unreadable, truncated, not a finished run of this family
        logging.getLogger(__name__).warning("%s is not a finished run (%s): training again", path,
                                            str(e).splitlines()[0][:200])
        return None
    if metrics.get("status") not in FINISHED:
        return None
    differ = config.differences(metrics["config"], family.non_result)
    if differ:
        said = "; ".join(f"{k}: {old!r} there, {new!r} here" for k, (old, new) in differ.items())
        raise ValueError(f"{path} holds a finished run of another config (differs in {said}); {fix}")
    return metrics


class DeviceUnavailable(ValueError):
    """--device names a device this machine does not have (or no device at all)."""


def resolve_device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceUnavailable(f"--device {name}: not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(f"--device {name} asked for, but CUDA is not available here; use --device auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
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


def time_to_target(steps, errors, seconds, target: float) -> tuple[float, float]:
    """(iterations, seconds) of the first evaluation whose error is at or below `target` -- a target
    crossed between two evaluations counts at the later one, where it was seen; (inf, inf) when no
    evaluation within the budget reached it (a result of the run, not a dropped seed). One definition
    for every family (the feed-forward time-to-result table, the parallel runs' time to target)."""
    for step, error, second in zip(steps, errors, seconds):
        if error is not None and error == error and error <= target:
            return float(step), float(second)
    return math.inf, math.inf
