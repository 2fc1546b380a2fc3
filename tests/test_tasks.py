"""Copy / repeat-copy episodes, the two layouts and schedules, the vectorised streams, the curriculum."""
import pytest
import torch

from sgbench.tasks import (
    Curriculum,
    EpisodeStream,
    Task,
    copy_episode,
    factor_pairs,
    repeat_copy_episode,
    single_episode,
    step_tensors,
    window_errors,
)


# ------------------------------------------------------------------ layouts
def test_copy_paper_layout_outputs_start_on_the_delimiter_step():
    x, y, mask = copy_episode(3, torch.Generator().manual_seed(0), "paper")
    assert x.shape == (6, 10) and y.shape == (6, 8)
    assert torch.equal(y[3:], x[:3, :8])  # vector i (read at step i) is due at step 3 + i: lag N
    assert x[:, 8].tolist() == [0, 0, 0, 1, 0, 0] and x[:, 9].tolist() == [1, 0, 0, 0, 0, 0]  # delimiter, start
    assert x[3:, :8].abs().sum() == 0 and mask.tolist() == [0, 0, 0, 1, 1, 1]


def test_copy_legacy_layout_outputs_start_after_the_delimiter():
    x, y, mask = copy_episode(3, torch.Generator().manual_seed(0), "legacy")
    assert x.shape == (7, 9) and y.shape == (7, 8)
    assert torch.equal(y[4:], x[:3, :8]) and x[3, 8] == 1 and x[:, 8].sum() == 1  # lag N + 1
    assert mask.tolist() == [0, 0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("layout,first_out", [("paper", 2), ("legacy", 3)])
def test_repeat_copy_layouts(layout, first_out):
    x, y, mask = repeat_copy_episode(2, 3, torch.Generator().manual_seed(0), layout, repeat_norm=10.0)
    length = first_out + 6 + 1
    assert x.shape[0] == length and y.shape == (length, 9)
    assert x[2, 8] == pytest.approx(0.3)  # R / repeat_norm on the count channel, right after the sequence
    assert torch.equal(y[first_out:first_out + 6, :8], x[:2, :8].repeat(3, 1))  # the sequence R times
    assert y[-1].tolist() == [0] * 8 + [1] and y[:-1, 8].sum() == 0  # the end marker, last
    assert mask.tolist() == [0] * first_out + [1] * 7


def first_output_gradient(layout: str, n: int, T: int) -> float:
    """|d loss(first output) / d input vector 0| under truncated BPTT with windows of T steps, on an episode
    that starts a stream (the layout decides the lag between them)."""
    torch.manual_seed(0)
    task = Task("copy", layout, "fixed")
    lstm, head = torch.nn.LSTM(task.in_dim, 8), torch.nn.Linear(8, task.out_dim)
    x, y, _ = single_episode(task, n, 1, torch.Generator().manual_seed(1))
    x = x.unsqueeze(1).requires_grad_()
    due = n + task.out_offset  # the step at which vector 0 is due
    state, outputs = None, []
    for t in range(0, due + 1, T):
        out, state = lstm(x[t:t + T], state)
        outputs.append(out)
        state = tuple(s.detach() for s in state)  # truncation
    logits = head(torch.cat(outputs))[due, 0]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[due])
    (g,) = torch.autograd.grad(loss, x)
    return float(g[0, 0, :8].abs().sum())


@pytest.mark.parametrize("layout,n,T,reachable", [
    ("paper", 1, 2, True), ("paper", 2, 2, False), ("paper", 2, 3, True), ("paper", 4, 5, True),
    ("legacy", 1, 2, False), ("legacy", 1, 3, True), ("legacy", 3, 4, False)])
def test_bptt_credits_a_dependency_only_when_the_window_holds_its_lag(layout, n, T, reachable):
    """The structural ceiling: a window of T steps holds lags of at most T - 1. Under the legacy layout the
    lag is N + 1 (so at T = 2 not even N = 1 is learnable by gradient); under the paper layout it is N."""
    assert Task("copy", layout).lag(n) == n + (layout == "legacy")
    assert (first_output_gradient(layout, n, T) > 0) == reachable


# ------------------------------------------------------------------ schedules and the length metric
def test_upto_schedule_can_express_every_recalled_paper_length():
    task = Task("repeat_copy", schedule="upto")
    recalled = (7, 5, 19, 23, 38, 46, 52)  # [DNI] repeat-copy lengths (recalled)
    assert [task.level(L)["length"] for L in recalled] == list(recalled)
    fixed = {Task("repeat_copy", schedule="fixed").level(L)["length"] for L in range(1, 40)}
    assert not fixed & set(recalled[:3])  # N*R with N, R raised in turn: 1, 2, 4, 6, 9, ... (defect 5)


def test_upto_schedule_draws_lengths_up_to_the_level_as_factor_pairs():
    task = Task("repeat_copy", schedule="upto")
    n, r = task.draw(12, 4000, torch.Generator().manual_seed(0), "cpu")
    lengths = (n * r).tolist()
    assert set(lengths) == set(range(1, 13))  # every length 1..L occurs, nothing longer
    assert {(a, b) for a, b in zip(n.tolist(), r.tolist()) if a * b == 12} == set(factor_pairs(12))
    copy_n, copy_r = Task("copy", schedule="upto").draw(5, 1000, torch.Generator().manual_seed(0), "cpu")
    assert set(copy_n.tolist()) == {1, 2, 3, 4, 5} and set(copy_r.tolist()) == {1}


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown layout 'ntm'; choose one of paper, legacy"):
        Task("copy", layout="ntm")
    with pytest.raises(ValueError, match="unknown task"):
        Task("sort")


# ------------------------------------------------------------------ streams
def test_lockstep_stream_matches_the_episode_definition_and_is_seeded():
    task = Task("copy", "paper", "fixed")
    a, b, c = (EpisodeStream(task, 4, seed, desync=False, start_level=2) for seed in (1, 1, 2))
    wa = [a.window(3, 2) for _ in range(4)]
    wb = [b.window(3, 2) for _ in range(4)]
    assert all(torch.equal(u, v) for x, y in zip(wa, wb) for u, v in zip(x, y))
    assert not torch.equal(torch.cat([w[0] for w in wa]), torch.cat([c.window(3, 2)[0] for _ in range(4)]))
    x, y, mask = (torch.cat(parts) for parts in zip(*wa))  # 12 steps = 3 episodes of 4 steps per stream
    assert torch.nonzero(x[:, 0, 9]).flatten().tolist() == [0, 4, 8]  # start markers, back to back
    for e in range(3):
        ep = x[4 * e:4 * e + 4, 1]
        assert torch.equal(y[4 * e + 2:4 * e + 4, 1], ep[:2, :8]) and mask[4 * e:4 * e + 4, 1].tolist() == [0, 0, 1, 1]


def start_phases(stream, T, level, windows=12):
    """Per stream, the window offsets at which its episodes start, in order (from the start channel)."""
    x = torch.cat([stream.window(T, level)[0] for _ in range(windows)])
    return [tuple((torch.nonzero(x[:, b, -1]).flatten() % T).tolist()) for b in range(x.shape[1])]


def test_streams_are_desynchronised():
    """Copy T = 5, N = 2 (4-step episodes under the paper layout, fixed lengths): lockstep streams all
    start their episodes at the same offsets; desynchronised ones do not (defect 2)."""
    task = Task("copy", "paper", "fixed")
    lockstep = start_phases(EpisodeStream(task, 16, 0, desync=False, start_level=2), 5, 2)
    assert len(set(lockstep)) == 1
    desync = EpisodeStream(task, 16, 0, start_level=2)
    assert len(set(desync.pos.tolist())) > 1  # every stream starts somewhere else in its first episode
    assert len(set(start_phases(desync, 5, 2))) > 1


def test_finish_window_scores_whole_episodes_only():
    task = Task("copy", "paper", "fixed")
    stream = EpisodeStream(task, 3, 0, start_level=2)
    done = []
    for _ in range(6):  # N = 2: 4 steps, 2 output steps; 1 bit per output step -> 2 bits per episode
        _, _, mask = stream.window(3, 2)
        done += stream.finish_window(mask * 1.0)
    assert done and all(d == (2, 2.0, 2) for d in done)  # the partial first episodes are not scored
    assert len(done) < 3 * 18 // 4


def test_stream_state_round_trip_continues_identically():
    task = Task("repeat_copy")
    a = EpisodeStream(task, 5, 3)
    for _ in range(3):
        a.window(4, 6)
    b = EpisodeStream(task, 5, 99)
    b.load_state_dict({k: v.clone() if torch.is_tensor(v) else v for k, v in a.state_dict().items()})
    for _ in range(4):
        wa, wb = a.window(4, 6), b.window(4, 6)
        assert all(torch.equal(u, v) for u, v in zip(wa, wb))
        assert a.finish_window(wa[2]) == b.finish_window(wb[2])


class StepByStepStream(EpisodeStream):
    """The reference: sgbench's first stream, one time step at a time (step_tensors per step; new
    episodes drawn as soon as the old ones end). The vectorised window must equal it bit for bit."""

    def window(self, T, level):
        xs, ys, ms, ends = [], [], [], []
        for _ in range(T):
            x, y, m = step_tensors(self.task, self.seq, self.n, self.r, self.pos)
            xs.append(x), ys.append(y), ms.append(m)
            self.pos += 1
            done = self.pos >= self.task.episode_length(self.n, self.r)
            ends.append((done, done & self.scored, self.level.clone(), self.n * self.r + int(self.task.repeat)))
            if done.any():
                self._new_episodes(done, level)
        self._ends = tuple(torch.stack(e) for e in zip(*ends))
        return torch.cat(xs), torch.cat(ys), torch.cat(ms)

    def finish_window(self, bits):
        """The first scoring: each stream's error summed step by step, read where a scored episode ends."""
        done, scored_end, level, outputs = self._ends
        totals = []
        for t in range(len(bits)):
            self.error = self.error + bits[t]
            totals.append(self.error)
            self.error = torch.where(done[t], 0.0, self.error)
        flags = scored_end.T  # [B, T]: per stream, in time order
        return list(zip(level.T[flags].tolist(), torch.stack(totals).T[flags].tolist(), outputs.T[flags].tolist()))


STREAM_CASES = [("copy", "paper", "upto", True), ("copy", "legacy", "fixed", True), ("copy", "paper", "upto", False),
                ("repeat_copy", "paper", "upto", True), ("repeat_copy", "legacy", "fixed", False),
                ("repeat_copy", "paper", "fixed", True)]


@pytest.mark.parametrize("name, layout, schedule, desync", STREAM_CASES)
def test_vectorised_window_equals_the_step_by_step_stream(name, layout, schedule, desync):
    """Many seeds, window lengths from shorter than an episode to several episodes long, levels that rise
    (the bank of vectors widens mid-window): inputs, targets, masks, scored episodes, every piece of state
    and the generator's position are identical."""
    task = Task(name, layout, schedule)
    for seed in range(12):
        T, batch = (1, 2, 3, 5, 8, 17)[seed % 6], (2, 5, 16)[seed % 3]
        fast, slow = (cls(task, batch, seed, desync=desync, start_level=1 + seed % 3)
                      for cls in (EpisodeStream, StepByStepStream))
        for k in range(10):
            level = 1 + seed % 3 + k // 2
            a, b = fast.window(T, level), slow.window(T, level)
            assert all(torch.equal(u, v) for u, v in zip(a, b)), (seed, k)
            errors = torch.rand(T, batch, generator=torch.Generator().manual_seed(k)) * a[2]
            assert fast.finish_window(errors) == slow.finish_window(errors)
        for key, value in fast.state_dict().items():
            assert torch.equal(value, slow.state_dict()[key]), key


def test_window_errors_are_masked_bits_summed_over_channels():
    logits, y = torch.zeros(2, 1, 8), torch.ones(2, 1, 8)
    err = window_errors(logits, y, torch.tensor([[0.0], [1.0]]))
    assert err[0, 0] == 0 and err[1, 0] == pytest.approx(8 * 0.6931, rel=1e-3)


# ------------------------------------------------------------------ curriculum
def test_curriculum_advances_below_threshold_and_not_before():
    cur = Curriculum(threshold=0.15, window=3)
    for bits in (0.1, 0.1):
        cur.record(1, bits)
    assert not cur.maybe_advance() and cur.level == 1  # below threshold, but too few episodes yet
    cur.record(1, 0.2)  # mean 0.133 < 0.15 over a full window
    assert cur.maybe_advance() and (cur.level, cur.solved) == (2, 1)


def test_curriculum_in_bits_per_vector_divides_by_the_output_steps():
    """Episodes of 4 output vectors at 0.4 bits each: 0.4 bits per sequence fails 0.15 bits per
    sequence, and 0.1 bits per vector passes 0.15 bits per vector."""
    per_seq, per_vec = Curriculum(0.15, window=3), Curriculum(0.15, window=3, unit="vector")
    for cur in (per_seq, per_vec):
        for _ in range(3):
            cur.record(1, 0.4, 4)
    assert not per_seq.maybe_advance() and per_vec.maybe_advance() and per_vec.solved == 1
    assert per_seq.mean_error() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="sequence, vector"):
        Curriculum(unit="bit")


def test_curriculum_needs_the_mean_below_threshold_at_the_current_level():
    cur = Curriculum(threshold=0.15, window=3)
    for bits in (0.5, 0.1, 0.1):
        cur.record(1, bits)
    assert not cur.maybe_advance()  # mean 0.233: above the threshold
    cur.record(1, 0.1)
    cur.record(2, 5.0)  # an episode of another level does not count
    assert cur.maybe_advance() and (cur.level, cur.solved) == (2, 1)
    assert cur.recent == [] and not cur.maybe_advance()
    restored = Curriculum(threshold=0.15, window=3)
    restored.load_state_dict(cur.state_dict())
    assert (restored.level, restored.solved, restored.recent) == (2, 1, [])
