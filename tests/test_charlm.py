"""Character-level language modelling runs: bits per character, labels, resume, bad corpus."""
import json
import math

import pytest
import torch

from sgbench import runtime
from sgbench.corpus import CorpusError
from sgbench.families.charlm.config import CharLMConfig, run_name
from sgbench.families.charlm.run import TextStreams, evaluate_bpc, train_charlm
from sgbench.families.rnn.run import RunInterrupted


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "tiny-plays"
    root.mkdir()
    for i in range(10):
        (root / f"play_{i}.txt").write_text("".join(f"ACT {j}. Enter the {i}th player, speaking.\n" for j in range(40)))
    return root


def tiny(corpus, out, **kw):
    cfg = CharLMConfig(**{"corpus": str(corpus), "method": "dni", "T": 3, "timesteps": 120, "batch_size": 4,
                          "hidden_size": 16, "embed_dim": 8, "eval_every": 60, "eval_chars": 400, "device": "cpu",
                          "threads": 1, "bpl_horizon": 2, **kw})
    return train_charlm(cfg, out)


@pytest.mark.parametrize("method", ["bptt", "dni", "dni_aux", "dni_bpl"])
def test_tiny_run_reports_bits_per_character_labelled_by_the_corpus(tmp_path, corpus, method):
    m = tiny(corpus, tmp_path / "run", method=method)
    runtime.validate(json.loads((tmp_path / "run" / "metrics.json").read_text()), "charlm_metrics")
    assert m["dataset"]["name"] == "tiny-plays" and m["status"] == "completed"
    vocab = m["dataset"]["vocab_size"]
    assert m["curves"]["timestep"] == [60, 120]
    assert 0 < m["final"]["test_bpc"] < math.log2(vocab) + 1  # near or below uniform guessing after training
    assert (m["curves"]["boundary_target_cosine"][-1] is not None) == (method != "bptt")


def test_resume_after_a_kill_is_bit_exact(tmp_path, corpus):
    whole = tiny(corpus, tmp_path / "whole", method="dni_bpl")
    cfg = CharLMConfig(corpus=str(corpus), method="dni_bpl", T=3, timesteps=120, batch_size=4, hidden_size=16,
                       embed_dim=8, eval_every=60, eval_chars=400, device="cpu", threads=1, bpl_horizon=2)
    with pytest.raises(RunInterrupted):
        train_charlm(cfg, tmp_path / "killed", _stop_after=60)
    resumed = train_charlm(cfg, tmp_path / "killed")
    assert resumed["meta"]["resumed"] and resumed["final"] == whole["final"]
    assert {k: v for k, v in resumed["curves"].items() if k != "elapsed_s"} == \
           {k: v for k, v in whole["curves"].items() if k != "elapsed_s"}


def test_an_absurd_finite_loss_stops_the_run_as_diverged(tmp_path, corpus):
    """lr 1e12 used to end `completed` with a test bpc of 4e13; a loss beyond runtime.ABSURD_LOSS times
    chance's (log vocab per character) is divergence, and a diverged run has no test bpc."""
    m = tiny(corpus, tmp_path / "absurd", method="bptt", lr=1e12)
    assert m["status"] == "diverged" and m["final"]["test_bpc"] is None


def test_a_bad_corpus_fails_before_training(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        tiny(tmp_path / "nowhere", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_text_streams_read_next_characters_from_spread_offsets():
    ids = torch.arange(20)
    streams = TextStreams(ids, 4)
    x, y, _ = streams.window(3)
    assert x[:, 0].tolist() == [0, 1, 2] and y[:, 0].tolist() == [1, 2, 3] and x[0].tolist() == [0, 5, 10, 15]
    x, _, _ = streams.window(3)
    assert x[:, 3].tolist() == [18, 19, 0]  # wraps around the end of the text


def test_evaluate_bpc_of_a_uniform_model_is_log2_vocab():
    class Uniform(torch.nn.Module):
        def initial_state(self, b, device):
            return torch.zeros(b, 2)

        def forward(self, x, state):
            return torch.zeros(*x.shape, 8), None, state

    assert evaluate_bpc(Uniform(), torch.randint(0, 8, (1000,))) == pytest.approx(3.0)


def test_run_name_uses_the_corpus_name():
    assert run_name({"corpus": "/data/shakespeare-gutenberg", "T": 5, "method": "dni", "seed": 1}) == \
        "shakespeare-gutenberg-T5-dni-seed1"


def test_claim_c1_is_registered_for_the_charlm_family():
    """Its rule on hand-made tables (each verdict) is in tests/test_claims.py."""
    from sgbench.claims import rules
    claim = next(c for c in rules.CLAIMS if c.id == "C1")
    assert claim.family == "charlm" and claim.compare.cells == "charlm" and claim.compare.metric == "test_bpc"
