"""Copy and repeat-copy ([Graves14], used by [DNI] Sec. 3.1) as continuous streams of episodes.

Copy, length N: N random 8-bit vectors, then a delimiter on its own input channel; the
net must then output the N vectors. Episode length 2N + 1, N output steps.

Repeat copy, length (N, R): N random 8-bit vectors, then one step whose extra input
channel holds R / repeat_norm (the repeat count, scaled to stay O(1)); the net must
then output the N vectors R times in a row and finally raise an end marker on its own
output channel. Episode length N + 1 + N*R + 1, N*R + 1 output steps.

The loss is on output steps only (a mask), summed over channels: a sequence's error is
its total binary cross-entropy in bits, the unit of [Graves14]'s curricula.

An `EpisodeStream` holds B independent streams; each is an endless concatenation of
episodes at the curriculum's current level, read T steps at a time, so the recurrent
state is carried across windows and across episode ends (the net has to use the
delimiter to know where an episode starts).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .catalog import TASKS

N_BITS = 8


def copy_episode(n: int, generator: torch.Generator, n_bits: int = N_BITS):
    """(inputs [2n+1, n_bits+1], targets [2n+1, n_bits], mask [2n+1])."""
    seq = torch.randint(0, 2, (n, n_bits), generator=generator).float()
    x = torch.zeros(2 * n + 1, n_bits + 1)
    x[:n, :n_bits] = seq
    x[n, n_bits] = 1.0  # delimiter
    y = torch.zeros(2 * n + 1, n_bits)
    y[n + 1:] = seq
    mask = torch.zeros(2 * n + 1)
    mask[n + 1:] = 1.0
    return x, y, mask


def repeat_copy_episode(n: int, r: int, generator: torch.Generator, n_bits: int = N_BITS,
                        repeat_norm: float = 10.0):
    """(inputs [L, n_bits+1], targets [L, n_bits+1], mask [L]) with L = n + 1 + n*r + 1."""
    seq = torch.randint(0, 2, (n, n_bits), generator=generator).float()
    length = n + 1 + n * r + 1
    x = torch.zeros(length, n_bits + 1)
    x[:n, :n_bits] = seq
    x[n, n_bits] = r / repeat_norm  # the repeat count, which also marks the end of the input
    y = torch.zeros(length, n_bits + 1)
    y[n + 1:n + 1 + n * r, :n_bits] = seq.repeat(r, 1)
    y[-1, n_bits] = 1.0  # end marker
    mask = torch.zeros(length)
    mask[n + 1:] = 1.0
    return x, y, mask


class Task:
    """A task's levels and episodes. Level i (0-based) of the curriculum:
    copy: N = i + 1.  repeat copy: (N, R) = (1,1), (2,1), (2,2), (3,2), (3,3), ...: N and R
    are raised in turn, N first; its length is N*R, the number of vectors to output."""

    def __init__(self, name: str, repeat_norm: float = 10.0, n_bits: int = N_BITS):
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
        self.name, self.repeat_norm, self.n_bits = name, repeat_norm, n_bits
        self.in_dim = n_bits + 1
        self.out_dim = n_bits if name == "copy" else n_bits + 1

    def level(self, i: int) -> dict:
        if self.name == "copy":
            return {"N": i + 1, "R": None, "length": i + 1}
        n, r = (i + 1) // 2 + 1, i // 2 + 1
        return {"N": n, "R": r, "length": n * r}

    def episode(self, level: int, generator: torch.Generator):
        lv = self.level(level)
        if self.name == "copy":
            return copy_episode(lv["N"], generator, self.n_bits)
        return repeat_copy_episode(lv["N"], lv["R"], generator, self.n_bits, self.repeat_norm)


class EpisodeStream:
    """B streams of back-to-back episodes, read a window of T steps at a time.

    `window(T, level)` returns inputs [T, B, in], targets [T, B, out] and mask [T, B]; new
    episodes start at `level`. `finish_window(bits)` takes the per-step error in bits [T, B]
    of the window just read and returns (level, bits) for every episode that ended in it.
    """

    def __init__(self, task: Task, batch_size: int, seed: int):
        self.task, self.batch_size = task, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        # Per stream: the rest of the current episode (x, y, mask), its level, its error so far.
        self.pending = [None] * batch_size
        self.levels = [0] * batch_size
        self.errors = [0.0] * batch_size
        self._ends = []

    def window(self, T: int, level: int):
        xs, ys, ms, self._ends = [], [], [], []
        for b in range(self.batch_size):
            parts, filled = [], 0
            while filled < T:
                if self.pending[b] is None:
                    self.pending[b] = self.task.episode(level, self.generator)
                    self.levels[b] = level
                x, y, m = self.pending[b]
                take = min(T - filled, len(m))
                parts.append((x[:take], y[:take], m[:take]))
                filled += take
                if take == len(m):  # episode ends inside this window
                    self.pending[b] = None
                    self._ends.append((filled - 1, b, self.levels[b]))
                else:
                    self.pending[b] = (x[take:], y[take:], m[take:])
            xs.append(torch.cat([p[0] for p in parts]))
            ys.append(torch.cat([p[1] for p in parts]))
            ms.append(torch.cat([p[2] for p in parts]))
        return torch.stack(xs, 1), torch.stack(ys, 1), torch.stack(ms, 1)

    def finish_window(self, bits: torch.Tensor) -> list[tuple[int, float]]:
        """bits: [T, B] error of each step (0 off the output steps). Episodes that ended here."""
        bits = bits.detach().cpu()
        done, start = [], [0] * self.batch_size
        for t, b, level in self._ends:  # in order of (stream, time)
            self.errors[b] += float(bits[start[b]:t + 1, b].sum())
            done.append((level, self.errors[b]))
            self.errors[b], start[b] = 0.0, t + 1
        for b in range(self.batch_size):
            self.errors[b] += float(bits[start[b]:, b].sum())
        return done


class Curriculum:
    """Raise the level once the mean error of the last `window` episodes at the current level
    is below `threshold` bits per sequence. Episodes of an older level do not count.

    The threshold 0.15 bits/sequence follows [Graves14]-style curricula as described by
    [DNI] (recalled; see sgbench/reference notes). `solved` is the last level passed (-1: none).
    """

    def __init__(self, threshold: float = 0.15, window: int = 100, max_level: int = 10_000):
        self.threshold, self.window, self.max_level = threshold, window, max_level
        self.level, self.solved = 0, -1
        self.recent: list[float] = []

    def record(self, level: int, bits: float) -> None:
        if level == self.level:
            self.recent.append(bits)
            del self.recent[:-self.window]

    def mean_error(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None

    def maybe_advance(self) -> bool:
        if len(self.recent) < self.window or self.mean_error() >= self.threshold or self.level >= self.max_level:
            return False
        self.solved, self.level, self.recent = self.level, self.level + 1, []
        return True


def bits(nats: torch.Tensor) -> torch.Tensor:
    return nats / math.log(2.0)


def window_errors(logits, y, mask) -> torch.Tensor:
    """Per step and stream [T, B]: binary cross-entropy in nats, summed over bits, on output steps only."""
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1) * mask
