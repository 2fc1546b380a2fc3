"""Copy and repeat-copy ([Graves14], used by [DNI] Sec. 3.1) as continuous streams of episodes.

Every episode reads N random 8-bit vectors and then writes them back (repeat copy: R times in a
row, then an end marker). Two layouts, selectable (`Task(layout=...)`):

* ``paper`` (the tiers' choice): the first input step also raises a start-marker channel (as in
  DeepMind's public copy / repeat-copy code); step N raises the delimiter channel (repeat copy:
  R / repeat_norm, the count, on that channel) and the first output is due *on that step*, so the
  vector read at step i is due at step N + i: every dependency spans N transitions. Copy: 2N
  steps; repeat copy: N + N*R + 1 (the end marker after the last copy).
* ``legacy`` (sgbench's first layout): no start channel; the outputs start the step after the
  delimiter, so every dependency spans N + 1 transitions and truncated BPTT with windows of T
  steps can at best learn N <= T - 2. Copy: 2N + 1 steps; repeat copy: N + 1 + N*R + 1.

Why ``paper``: a window of T steps holds dependencies of at most T - 1 transitions, so under
``legacy`` [DNI]'s BPTT rows (7-10 at T = 2-5, recalled) are unreachable even at length 1 for
T = 2. Under ``paper`` length N <= T - 1 has a gradient inside a window; anything longer has to
be learned by a mechanism that generalises (or from the synthetic gradient).

Two schedules (`Task(schedule=...)`), level L = 1, 2, ... (the curriculum's level index + 1):

* ``upto`` (the tiers' choice): each episode draws its length l uniformly from 1..L (copy: N = l;
  repeat copy: (N, R) a uniformly drawn factor pair of l = N*R, the number of output vectors).
  Every integer is a level, so the length solved can take any value (the paper's recalled repeat-
  copy values 7, 5, 19, 23, 38, 46, 52 included), and short episodes keep being rehearsed.
* ``fixed`` (sgbench's first schedule): every episode of level L has the same length: copy N = L;
  repeat copy (N, R) = (1,1), (2,1), (2,2), (3,2), (3,3), ... (N and R raised in turn), length
  N*R, which can only be 1, 2, 4, 6, 9, 12, 16, ...

The loss is on output steps only (a mask), summed over channels: a sequence's error is its total
binary cross-entropy in bits, the unit of [Graves14]'s curricula.

`EpisodeStream` holds B independent streams, generated on the device several windows at a time for all
streams and steps at once (`window_tensors`; the only loop over time steps is in Python ints: it finds
where episodes end and draws the new ones, so the generator's draws are those of a step-by-step
generator; a change of level rewinds to the last window served). Streams are desynchronised: each
starts at a random point of its first episode (that partial episode is not scored), and episodes
differ in length, so window boundaries fall at different phases in different streams.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .catalog import TASKS

LAYOUTS = ("paper", "legacy")
SCHEDULES = ("upto", "fixed")
N_BITS = 8
AHEAD_STEPS = 128  # EpisodeStream.window makes this many time steps' windows at once (at least one window)


def fixed_nr(level: int) -> tuple[int, int]:
    """Repeat copy, schedule `fixed`: (N, R) of level L >= 1, N and R raised in turn, N first."""
    return level // 2 + 1, (level - 1) // 2 + 1


def factor_pairs(length: int) -> list[tuple[int, int]]:
    return [(n, length // n) for n in range(1, length + 1) if length % n == 0]


class Task:
    """A task's layout, schedule and levels. Levels are 1-based: level L is the curriculum's L-th."""

    def __init__(self, name: str, layout: str = "paper", schedule: str = "upto", repeat_norm: float = 10.0,
                 n_bits: int = N_BITS):
        for key, value, options in (("task", name, TASKS), ("layout", layout, LAYOUTS),
                                    ("schedule", schedule, SCHEDULES)):
            if value not in options:
                raise ValueError(f"unknown {key} {value!r}; choose one of {', '.join(options)}")
        self.name, self.layout, self.schedule = name, layout, schedule
        self.repeat_norm, self.n_bits = repeat_norm, n_bits
        self.repeat = name == "repeat_copy"
        self.start_channel = layout == "paper"
        self.out_offset = 0 if layout == "paper" else 1  # steps from the delimiter to the first output
        self.in_dim = n_bits + 1 + int(self.start_channel)
        self.out_dim = n_bits + int(self.repeat)
        self._pairs: dict = {}  # (level, device) -> factor-pair table of lengths 1..level (repeat copy, upto)

    def level(self, level: int) -> dict:
        """What level L (>= 1) asks: its length (N for copy, N*R output vectors for repeat copy), and N, R
        where the schedule fixes them (None where each episode draws its own)."""
        if self.schedule == "upto":
            return {"N": None if self.repeat else level, "R": None, "length": level}
        if not self.repeat:
            return {"N": level, "R": None, "length": level}
        n, r = fixed_nr(level)
        return {"N": n, "R": r, "length": n * r}

    def lag(self, n: int) -> int:
        """Transitions between reading a vector and the first step it is due."""
        return n + self.out_offset

    def episode_length(self, n, r):
        """Steps of an episode of (N, R) (tensors or ints); copy has R = 1 and no end marker."""
        return n + self.out_offset + n * r + int(self.repeat)

    def draw(self, level: int, count: int, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, R) of `count` new episodes at `level`, each [count] long (R = 1 for copy)."""
        if self.schedule == "fixed":
            n, r = fixed_nr(level) if self.repeat else (level, 1)
            return (torch.full((count,), n, dtype=torch.long, device=device),
                    torch.full((count,), r, dtype=torch.long, device=device))
        length = torch.randint(1, level + 1, (count,), generator=generator, device=device)
        if not self.repeat:
            return length, torch.ones_like(length)
        key = (level, str(device))
        if key not in self._pairs:
            self._pairs = {key: _pair_table(level, device)}  # [level, max pairs, 2] padded, counts [level]
        pairs, counts = self._pairs[key]
        pick = (torch.rand(count, generator=generator, device=device) * counts[length - 1]).long()
        nr = pairs[length - 1, pick]
        return nr[:, 0], nr[:, 1]


def _pair_table(level: int, device):
    lists = [factor_pairs(length) for length in range(1, level + 1)]
    width = max(len(p) for p in lists)
    pairs = torch.tensor([p + [p[-1]] * (width - len(p)) for p in lists], dtype=torch.long, device=device)
    return pairs, torch.tensor([len(p) for p in lists], dtype=torch.float, device=device)


def copy_episode(n: int, generator: torch.Generator, layout: str = "paper", n_bits: int = N_BITS):
    """One copy episode as (inputs [L, in], targets [L, out], mask [L]) (tests and reading)."""
    return single_episode(Task("copy", layout, "fixed", n_bits=n_bits), n, 1, generator)


def repeat_copy_episode(n: int, r: int, generator: torch.Generator, layout: str = "paper", n_bits: int = N_BITS,
                        repeat_norm: float = 10.0):
    return single_episode(Task("repeat_copy", layout, "fixed", repeat_norm, n_bits), n, r, generator)


def single_episode(task: Task, n: int, r: int, generator: torch.Generator):
    seq = torch.randint(0, 2, (1, n, task.n_bits), generator=generator).float()
    nt, rt = torch.tensor([n]), torch.tensor([r])
    steps = [step_tensors(task, seq, nt, rt, torch.tensor([p])) for p in range(task.episode_length(n, r))]
    return tuple(torch.cat(parts)[:, 0] for parts in zip(*steps))


def step_tensors(task: Task, seq, n, r, pos):
    """Inputs [B, in], targets [B, out], mask [B] of every stream at its position `pos` in its episode.

    seq [B, Nmax, bits] holds each stream's vectors; n, r, pos [B]."""
    b = torch.arange(len(pos), device=pos.device)
    nmax = seq.shape[1]
    reading = pos < n
    x = torch.zeros(len(pos), task.in_dim, device=seq.device)
    x[:, :task.n_bits] = seq[b, pos.clamp(max=nmax - 1)] * reading.unsqueeze(1)
    count = r.float() / task.repeat_norm if task.repeat else torch.ones_like(pos, dtype=torch.float)
    x[:, task.n_bits] = torch.where(pos == n, count, 0.0)
    if task.start_channel:
        x[:, task.n_bits + 1] = (pos == 0).float()
    d = pos - n - task.out_offset  # index of the output vector due now (negative: still reading)
    writing = (d >= 0) & (d < n * r)
    y = torch.zeros(len(pos), task.out_dim, device=seq.device)
    y[:, :task.n_bits] = seq[b, (d.clamp(min=0) % n.clamp(min=1)).clamp(max=nmax - 1)] * writing.unsqueeze(1)
    mask = writing.clone()
    if task.repeat:
        end = d == n * r
        y[:, task.n_bits] = end.float()
        mask |= end
    return x.unsqueeze(0), y.unsqueeze(0), mask.float().unsqueeze(0)



def window_tensors(task: Task, bank, row, n, r, pos):
    """step_tensors for every step of a window at once: inputs [T, B, in], targets [T, B, out], mask
    [T, B]. bank [rows, width + 1, bits] holds the episodes' vectors, then a zero vector (column
    `width`) that a step with no vector to read or write reads; row, n, r, pos [T, B] say which episode
    each stream is in at each step, and where. The values are step_tensors' (a vector's bits are 0 or
    1, so reading the zero vector gives what step_tensors' multiplication by 0 gives)."""
    blank = bank.shape[1] - 1
    d = pos - n - task.out_offset  # index of the output vector due now (negative: still reading)
    writing = (d >= 0) & (d < n * r)
    reading = bank[row, torch.where(pos < n, pos, blank)]
    delimiter = pos == n
    count = torch.where(delimiter, r.float() / task.repeat_norm, 0.0) if task.repeat else delimiter.float()
    x = [reading, count.unsqueeze(-1)] + ([(pos == 0).float().unsqueeze(-1)] if task.start_channel else [])
    y = bank[row, torch.where(writing, d % n.clamp(min=1), blank)]
    mask = writing
    if task.repeat:
        end = d == n * r
        y, mask = torch.cat([y, end.float().unsqueeze(-1)], -1), mask | end
    return torch.cat(x, -1), y, mask.float()


def _widen(seq: torch.Tensor, width: int) -> torch.Tensor:
    """seq [B, w, bits] padded with zeros to `width` vectors (what lies past an episode's N is never read)."""
    if seq.shape[1] >= width:
        return seq
    return torch.cat([seq, seq.new_zeros(seq.shape[0], width - seq.shape[1], seq.shape[2])], dim=1)


class EpisodeStream:
    """B streams of back-to-back episodes, read T steps at a time, all on `device`.

    `window(T, level)` returns inputs [T, B, in], targets [T, B, out] and mask [T, B]; episodes
    started in it are drawn at `level`. `finish_window(bits)` takes the per-step error in bits
    [T, B] of the window just read and returns (level, bits) of every scored episode that ended in
    it. `desync=False` gives the lockstep streams of sgbench's first version (every stream starts
    an episode at step 0 and scores it).
    """

    def __init__(self, task: Task, batch_size: int, seed: int, device="cpu", desync: bool = True,
                 start_level: int = 1):
        self.task, self.batch_size, self.device = task, batch_size, torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        z = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.n, self.r, self.pos, self.level = z.clone(), z.clone(), z.clone(), z.clone()
        self.seq = torch.zeros(batch_size, 1, task.n_bits, device=self.device)
        self.error = torch.zeros(batch_size, device=self.device)
        self.scored = torch.ones(batch_size, dtype=torch.bool, device=self.device)
        self._ends = None  # the ends of the window served last (finish_window)
        self._ahead, self._ahead_key, self._served = [], None, None  # windows made ahead (window), for (T, level)
        everyone = torch.ones(batch_size, dtype=torch.bool, device=self.device)
        self._new_episodes(everyone, start_level)
        if desync:  # a random point of a first, unscored episode
            length = task.episode_length(self.n, self.r)
            self.pos = (torch.rand(batch_size, generator=self.generator, device=self.device) * length).long()
            self.scored[:] = False

    def _draw(self, count: int, level: int, width: int):
        """(N, R, vectors [count, width', bits] of integer 0s and 1s, width') of `count` new episodes: the
        draws of the stream's generator, in this order, one call each per time step at which episodes
        start. The vectors span the widest episode so far (width'), as one block per stream would."""
        n, r = self.task.draw(level, count, self.generator, self.device)
        width = max(width, int(n.max()) if self.task.schedule == "fixed" else level)
        bits = torch.randint(0, 2, (count, width, self.task.n_bits), generator=self.generator, device=self.device)
        return n, r, bits, width  # made float where they meet the float vectors (a cast per call costs)

    def _new_episodes(self, which: torch.Tensor, level: int) -> None:
        """Start new episodes in the streams `which` (the constructor's first episodes)."""
        idx = which.nonzero().flatten()
        n, r, bits, width = self._draw(len(idx), level, self.seq.shape[1])
        self.seq = _widen(self.seq, width)
        self.seq[idx] = bits.float()
        self.n[idx], self.r[idx], self.pos[idx] = n, r, 0
        self.level[idx], self.scored[idx] = level, True

    def window(self, T: int, level: int):
        """The next T steps of every stream. Windows are made `AHEAD_STEPS // T` at a time (at least
        one: a tensor op costs about the same for 4 steps as for 128) and served in order; a call with
        another T or level first rewinds the stream to the end of the last window served, so every
        window, and the state a checkpoint saves, is what a window-at-a-time stream gives
        (tests/test_tasks.py)."""
        if self._ahead and self._ahead_key != (T, level):
            self._rewind()
        if not self._ahead:
            self._ahead_key = (T, level)
            self._ahead = self._make(T, level, max(1, AHEAD_STEPS // T))
        x, y, mask, self._ends, self._served = self._ahead.pop(0)
        return x, y, mask

    def _make(self, T: int, level: int, count: int) -> list:
        """`count` windows of T steps: per window (inputs, targets, mask, its ends for finish_window, the
        stream's state after it). The bookkeeping is in Python ints: which stream ends an episode at which
        step, and so how many episodes each step draws (the generator's draws stay in the step-by-step
        order: one draw per step at which episodes end, streams in order), and which scored episodes end
        where. Every tensor is then built at once over [count * T, B]: each step's episode is a row of a
        bank of vectors (the streams' current episodes, then every episode drawn here)."""
        B, device, task, steps = self.batch_size, self.device, self.task, count * T
        pos, *current = torch.stack([self.pos, self.n, self.r, self.level, self.scored.long()]).tolist()
        episodes = list(zip(*current))  # per bank row: (N, R, level, scored)
        row = list(range(B))  # each stream's current episode (bank row)
        start = [-p for p in pos]  # the step its current episode started at (its position at step t: t - start)
        ends: dict[int, list[int]] = {}  # step -> streams whose episode has its last step there
        for b, (n, r, *_) in enumerate(episodes):
            ends.setdefault(start[b] + task.episode_length(n, r) - 1, []).append(b)
        bank, width = [self.seq], self.seq.shape[1]
        new = []  # (step, stream) of each episode's end
        scored_ends = [[] for _ in range(count)]  # per window: (stream, step in it, level, outputs)
        carried, widths, generators = [], [], []  # per window: the state after it
        for t in range(steps):
            if t in ends:
                streams = sorted(ends.pop(t))
                n, r, bits, width = self._draw(len(streams), level, width)
                bank.append(bits)
                for b, n_b, r_b in zip(streams, n.tolist(), r.tolist()):
                    ended_n, ended_r, ended_level, ended_scored = episodes[row[b]]
                    if ended_scored:  # outputs: N * R (+ the end marker)
                        scored_ends[t // T].append((b, t % T, ended_level, ended_n * ended_r + int(task.repeat)))
                    new.append((t, b))
                    row[b], start[b] = len(episodes), t + 1
                    episodes.append((n_b, r_b, level, 1))
                    ends.setdefault(t + task.episode_length(n_b, r_b), []).append(b)
            if t % T == T - 1:
                carried.append([(t + 1 - start[b], *episodes[row[b]], row[b]) for b in range(B)])
                widths.append(width)
                generators.append(self.generator.get_state())
        bank = F.pad(torch.cat([_widen(b, width) for b in bank]), (0, 0, 0, 1))  # + window_tensors' zero vector
        # every int the tensors need, in one call (a call per list costs more than the lists): N, R of each
        # bank row, (step, stream) of each end, the state after each window
        ints = torch.tensor([v for e in episodes for v in e[:2]] + [v for e in new for v in e]
                            + [v for after in carried for c in zip(*after) for v in c], device=device)
        table, ends_at, carried = ints.split([2 * len(episodes), 2 * len(new), 6 * B * count])
        step_index = torch.arange(steps, device=device).unsqueeze(1)
        done = torch.zeros(steps, B, dtype=torch.bool, device=device)
        if new:  # the episode each step is in: the last one started at or before it (cummax), else the first
            t_end, stream = ends_at.view(-1, 2).unbind(1)
            done[t_end, stream] = True
            started = torch.full((steps + 1, B), -1, device=device)
            started[t_end + 1, stream] = t_end + 1
            new_row = torch.zeros(steps + 1, B, dtype=torch.long, device=device)
            new_row[t_end + 1, stream] = torch.arange(B, len(episodes), device=device)
            began = started[:steps].cummax(0).values
            fresh = began >= 0
            step_row = torch.where(fresh, new_row[:steps].gather(0, began.clamp(min=0)),
                                   torch.arange(B, device=device))
            step_pos = torch.where(fresh, step_index - began, self.pos + step_index)
        else:
            step_row, step_pos = torch.arange(B, device=device).expand(steps, B), self.pos + step_index
        n, r = table.view(-1, 2)[step_row].unbind(-1)
        x, y, mask = window_tensors(task, bank, step_row, n, r, step_pos)
        after = (carried.view(count, 6, B), bank, widths, generators)  # the state after each window (_after)
        made = []
        for k in range(count):  # clones: a window's tensors own their memory (what a step's update saves)
            steps_k = slice(k * T, (k + 1) * T)
            made.append((x[steps_k].clone(), y[steps_k].clone(), mask[steps_k].clone(),
                         (done[steps_k], sorted(scored_ends[k])), (k, after)))
        self._set(self._after(made[-1][4]))
        return made

    @staticmethod
    def _after(made) -> dict:
        """The stream's state (state_dict's form) after window k of a `_make`: made only when asked for (a
        resume, a rewind, the last window)."""
        k, (carried, bank, widths, generators) = made
        pos, n, r, level, scored, last_row = carried[k].clone().unbind(0)
        return {"generator": generators[k], "n": n, "r": r, "pos": pos, "level": level,
                "seq": bank[last_row, :widths[k]], "scored": scored.bool()}

    def _set(self, state: dict) -> None:
        """Make `state` (state_dict's form) the stream's state."""
        self.generator.set_state(state["generator"].cpu())  # a generator's state is a CPU tensor, even on CUDA
        for key in ("n", "r", "pos", "level", "seq", "scored"):
            setattr(self, key, state[key].to(self.device))

    def _rewind(self) -> None:
        """Drop the windows made ahead: back to the state after the last window served."""
        self._set(self._after(self._served))
        self._ahead = []

    def finish_window(self, bits: torch.Tensor) -> list[tuple[int, float, int]]:
        """bits: [T, B] error of each step (0 off the output steps). (level, bits, output steps) of each
        scored episode that ended here, per stream in time order."""
        done, scored_ends = self._ends
        totals = torch.empty_like(bits)
        error = self.error
        for step_bits, total, ended in zip(bits.detach().unbind(0), totals.unbind(0), done.unbind(0)):
            torch.add(error, step_bits, out=total)  # in time order: the sums are those of a step-wise loop
            error = total.masked_fill(ended, 0.0)
        self.error = error
        if not scored_ends:
            return []
        stream, step, level, outputs = zip(*scored_ends)
        return list(zip(level, totals[list(step), list(stream)].tolist(), outputs))

    def state_dict(self) -> dict:
        """The state after the last window served (windows made ahead are made again after a resume)."""
        if self._ahead:
            return {**self._after(self._served), "error": self.error}
        return {"generator": self.generator.get_state(), "n": self.n, "r": self.r, "pos": self.pos,
                "level": self.level, "seq": self.seq, "error": self.error, "scored": self.scored}

    def load_state_dict(self, state: dict) -> None:
        self._set(state)
        self.error, self._ahead = state["error"].to(self.device), []


THRESHOLD_UNITS = ("sequence", "vector")


class Curriculum:
    """Raise the level once the error of the last `window` scored episodes at the current level is below
    `threshold`: in bits per sequence (unit `sequence`: the mean of the episodes' total errors) or in
    bits per output vector (unit `vector`: their total error over their total output steps, as a
    per-step loss threshold reads). Episodes of an older level do not count.

    The threshold 0.15 bits/sequence follows [Graves14]-style curricula as described by [DNI]
    (recalled); [BPλ]'s code steps up when the batch loss is below 0.15 bits. Levels are 1-based;
    `solved` is the last level passed (0: none).
    """

    def __init__(self, threshold: float = 0.15, window: int = 100, max_level: int = 10_000, unit: str = "sequence"):
        if unit not in THRESHOLD_UNITS:
            raise ValueError(f"unknown threshold unit {unit!r}; choose one of {', '.join(THRESHOLD_UNITS)}")
        self.threshold, self.window, self.max_level, self.unit = threshold, window, max_level, unit
        self.level, self.solved = 1, 0
        self.recent: list[float] = []
        self.outputs: list[int] = []  # output steps of each recent episode

    def record(self, level: int, bits: float, outputs: int = 1) -> None:
        self.record_all([(level, bits, outputs)])

    def record_all(self, ended: list[tuple[int, float, int]]) -> list[float]:
        """Record the (level, bits, outputs) of episodes that ended, in order (EpisodeStream.finish_window);
        returns the bits of those that count: the ones at the current level."""
        current = [(bits, outputs) for level, bits, outputs in ended if level == self.level]
        if current:
            self.recent.extend(bits for bits, _ in current)
            self.outputs.extend(outputs for _, outputs in current)
            del self.recent[:-self.window], self.outputs[:-self.window]
        return [bits for bits, _ in current]

    def mean_error(self) -> float | None:
        """Bits per sequence of the recent episodes (whatever the unit of the test)."""
        return sum(self.recent) / len(self.recent) if self.recent else None

    def test_error(self) -> float | None:
        """The recent episodes' error in the threshold's unit."""
        if not self.recent:
            return None
        return self.mean_error() if self.unit == "sequence" else sum(self.recent) / max(1, sum(self.outputs))

    def maybe_advance(self) -> bool:
        if len(self.recent) < self.window or self.test_error() >= self.threshold or self.level >= self.max_level:
            return False
        self.solved, self.level, self.recent, self.outputs = self.level, self.level + 1, [], []
        return True

    def state_dict(self) -> dict:
        return {"level": self.level, "solved": self.solved, "recent": list(self.recent), "outputs": list(self.outputs)}

    def load_state_dict(self, state: dict) -> None:
        self.level, self.solved, self.recent = state["level"], state["solved"], list(state["recent"])
        self.outputs = list(state.get("outputs", [1] * len(self.recent)))


def bits(nats: torch.Tensor) -> torch.Tensor:
    return nats / math.log(2.0)


def window_errors(logits, y, mask) -> torch.Tensor:
    """Per step and stream [T, B]: binary cross-entropy in nats, summed over bits, on output steps only."""
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1) * mask
