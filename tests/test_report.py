"""Aggregation, figures and the replication report, on hand-made metrics files (the verdict rules
on hand-made tables: test_claims.py)."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from sgbench import catalog, cli
from sgbench.analysis import stats
from sgbench.claims import rules as claims
from sgbench.claims.render import write_report
from sgbench.families import aggregate, draw, get

T975 = {1: 12.706204736174707, 2: 4.302652729911275}  # Student t quantiles (0.975; df 1, 2)


def ff_metrics(method="dni", layers=3, seed=0, test_error=2.0, update_prob=None, tier="quick", dataset="mnist",
               iterations=100, curve=(50.0, None)):
    """A complete feed-forward metrics.json as train-ff writes it (old runs have no update_prob key)."""
    config = {"dataset": dataset, "arch": "fcn", "layers": layers, "method": method, "seed": seed,
              "iterations": iterations, "batch_size": 256, "lr": 3e-5, "lr_milestones": [0.6, 0.8], "lr_gamma": 0.1,
              "sg_hidden_layers": None, "sg_hidden_dim": None, "sg_loss_weight": 1.0, "sg_scale": 1.0,
              "eval_every": iterations // 2, "tier": tier, "device": "cpu"}
    errors = [curve[0], test_error]
    m = {"schema": "sgbench.ff_metrics/1", "status": "complete", "experiment": "feedforward", "tier": tier,
         "config": config,
         "dataset": {"requested": dataset, "variant": dataset, "source": "/data", "n_train": 100, "n_test": 10},
         "model": {"parameters": 1000, "sg_parameters": 10, "boundaries": layers},
         "curves": {"step": [iterations // 2, iterations], "train_loss": [1.0, 0.5], "test_error": errors,
                    "lr": [3e-5, 3e-6], "elapsed_s": [1.0, 2.0], "sg_loss": []},
         "final": {"test_error": test_error, "train_loss": 0.5, "sg_loss": []},
         "timing": {"wall_time_s": 3.0, "train_time_s": 2.0, "steps_per_s": 50.0},
         "meta": {"git_commit": "abc123", "python": "3.11", "torch": "2", "device": "cpu", "hostname": "h",
                  "hardware": {"cpu": "Test CPU", "cpu_count": 2, "torch_threads": 1}, "started_at": "now"}}
    if update_prob is not None:
        config["update_prob"] = update_prob
        unlocked = layers if method in catalog.UNLOCK_METHODS else 0      # one input model per layer above the first
        m["curves"]["input_loss"], m["final"]["input_loss"] = [[0.1, 0.1]] * unlocked, [0.1] * unlocked
        m["final"]["update_fraction"] = [update_prob] * (layers + 1)
    return m


def rnn_metrics(method="dni", T=2, seed=0, length=5, task="copy", tier="quick", cosine=(0.0, 0.2, 0.4, 0.6)):
    """A complete RNN metrics.json: four logged points, the curriculum reaching `length`."""
    dni = method != "bptt"
    return {
        "schema": "sgbench.rnn_metrics/1", "status": "completed", "experiment": "rnn", "tier": tier,
        "config": {"task": task, "method": method, "T": T, "seed": seed, "timesteps": 4000, "layout": "paper",
                   "schedule": "upto", "streams": "desync", "batch_size": 16, "hidden_size": 32, "lr": 1e-3,
                   "sg_hidden_layers": 0, "sg_scale": 0.1, "sg_discount": 0.9, "aux_weight": 1.0,
                   "threshold": 0.15, "curriculum_window": 10, "tier": tier, "device": "cpu"},
        "task": {"layout": "paper", "schedule": "upto", "in_dim": 10, "out_dim": 8},
        "model": {"parameters": 100, "sg_parameters": 10 if dni else 0},
        "curves": {"timestep": [1000, 2000, 3000, 4000], "bits_per_output_step": [0.5, 0.4, 0.3, 0.2],
                   "bits_per_sequence": [3.0, 2.0, None, 1.0], "length": [1, 2, max(length, 1), max(length, 1)],
                   "boundary_target_norm": [1.0, 1.0, 2.0, 2.0],
                   "boundary_sg_norm": [0.5, 0.5, 1.0, 1.0] if dni else [None] * 4,
                   "boundary_target_cosine": list(cosine) if dni else [None] * 4,
                   "elapsed_s": [1.0, 2.0, 3.0, 4.0]},
        "curriculum": [{"timestep": 0, "N": 1, "R": None, "length": 1}],
        "final": {"largest_length_solved": length, "N_solved": length, "R_solved": None, "bits_per_sequence": 1.0,
                  "signal_linear_cosine": 0.1, "signal_sg_cosine": 0.05 if dni else None, "signal_target_norm": 1.0},
        "timing": {"wall_time_s": 5.0, "train_time_s": 4.0, "timesteps_per_s": 1000.0},
        "meta": {"git_commit": "abc123", "python": "3.11", "torch": "2", "device": "cpu", "hostname": "h",
                 "hardware": {"cpu": "Test CPU", "cpu_count": 2, "torch_threads": 1}, "started_at": "now",
                 "resumed": False}}


def write_runs(root: Path, metrics: list[dict]) -> list[Path]:
    paths = []
    for i, m in enumerate(metrics):
        path = root / f"run{i}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(m))
        paths.append(path)
    return paths


def test_seed_stats_is_the_student_t_interval():
    s = stats.seed_stats([1.0, 2.0, 3.0])
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0)
    assert s["ci95"] == pytest.approx(T975[2] / math.sqrt(3))
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((2 - s["ci95"], 2 + s["ci95"]))
    one = stats.seed_stats([4.0])
    assert one["n"] == 1 and one["mean"] == 4.0 and math.isnan(one["ci95"])
    assert stats.cell_text(one) == "4.00 (n=1)"


def test_table1_from_handmade_files(tmp_path):
    runs = [ff_metrics("backprop", seed=s, test_error=e) for s, e in enumerate([2.0, 3.0, 4.0])]
    runs += [ff_metrics("dni", seed=s, test_error=e) for s, e in enumerate([5.0, 7.0])]
    runs += [ff_metrics("no_bprop", layers=6, test_error=30.0, update_prob=1.0)]
    aggregate("feedforward", write_runs(tmp_path / "runs", runs), "quick", tmp_path / "tables")

    table = pd.read_csv(tmp_path / "tables" / "feedforward.csv").set_index(["layers", "method"])
    assert table.loc[(3, "backprop"), "n"] == 3 and table.loc[(3, "backprop"), "mean"] == pytest.approx(3.0)
    assert table.loc[(3, "backprop"), "ci95"] == pytest.approx(T975[2] / math.sqrt(3))
    assert table.loc[(3, "dni"), "ci95"] == pytest.approx(T975[1] * math.sqrt(2) / math.sqrt(2))
    assert table.loc[(6, "no_bprop"), "n"] == 1
    md = (tmp_path / "tables" / "feedforward.md").read_text()
    assert "| mnist     | fcn    |        3 | 3.00 ± 2.48 (n=3) | 6.00 ± 12.71 (n=2) |" in md
    assert "Tier: **quick**" in md and "100 iterations" in md and "Student t" in md and "Test CPU" in md
    assert "30.00 (n=1)" in md
    runs_csv = pd.read_csv(tmp_path / "tables" / "feedforward_runs.csv")
    assert len(runs_csv) == 6 and set(runs_csv["update_prob"]) == {1.0}
    curves = pd.read_csv(tmp_path / "tables" / "feedforward_curves.csv")
    assert len(curves) == 12 and list(curves.columns[:6]) == get("feedforward").tables().CURVE_COLUMNS[:6]
    assert "not run at this tier" in (tmp_path / "tables" / "unlock.md").read_text()


def test_unlock_table_groups_by_update_probability(tmp_path):
    runs = [ff_metrics("dni", seed=s, test_error=3.0 + s) for s in (0, 1)]            # no key: p = 1
    runs += [ff_metrics("dni", seed=s, test_error=6.0 + s, update_prob=0.2) for s in (0, 1)]
    runs += [ff_metrics("cunlock", seed=0, test_error=4.0, update_prob=1.0)]
    runs += [ff_metrics("dni", layers=6, test_error=9.0)]                              # another cell
    aggregate("feedforward", write_runs(tmp_path / "runs", runs), "quick", tmp_path / "t")
    unlock = pd.read_csv(tmp_path / "t" / "unlock.csv")
    assert set(unlock["layers"]) == {3}
    dni = unlock[unlock["method"] == "dni"].set_index("update_prob")
    assert dni.loc[1.0, "mean"] == pytest.approx(3.5) and dni.loc[0.2, "mean"] == pytest.approx(6.5)
    md = (tmp_path / "t" / "unlock.md").read_text()
    assert "p = 1" in md and "p = 0.2" in md and "cunlock" in md
    table1 = pd.read_csv(tmp_path / "t" / "feedforward.csv")
    assert set(table1["method"]) == {"dni"} and table1.loc[table1["layers"] == 3, "mean"].item() == pytest.approx(3.5)


def test_rnn_table_and_boundary_statistics(tmp_path):
    runs = [rnn_metrics("bptt", T=2, seed=s, length=n) for s, n in ((0, 3), (1, 5))]
    runs += [rnn_metrics("dni", T=2, seed=s, length=n) for s, n in ((0, 8), (1, 10))]
    aggregate("rnn", write_runs(tmp_path / "runs", runs), "quick", tmp_path / "t")
    table = pd.read_csv(tmp_path / "t" / "rnn.csv").set_index("method")
    assert table.loc["dni", "mean"] == pytest.approx(9.0) and table.loc["dni", "ci95"] == pytest.approx(T975[1])
    per_run = pd.read_csv(tmp_path / "t" / "rnn_runs.csv").set_index(["method", "seed"])
    assert per_run.loc[("dni", 0), "late_cosine"] == pytest.approx(0.6)     # last quarter: the last point
    assert per_run.loc[("dni", 0), "late_norm_ratio"] == pytest.approx(0.5)
    assert math.isnan(per_run.loc[("bptt", 0), "late_cosine"])
    md = (tmp_path / "t" / "rnn.md").read_text()
    assert "T = 2" in md and "9.0 ± 12.7 (n=2)" in md and "4,000 stream time steps" in md
    assert md.index("| copy   | bptt") < md.index("| copy   | dni")
    assert len(pd.read_csv(tmp_path / "t" / "rnn_curves.csv")) == 16


def test_rnn_cost_table_and_every_a1_cell_in_the_report(tmp_path):
    runs = []
    for T, memory, step in ((2, 0.2, 0.003), (4, 0.3, 0.005)):
        for seed in (0, 1, 2):
            for method in ("bptt", "dni"):
                m = rnn_metrics(method, T=T, seed=seed, length=5)
                m["timing"].update(step_s=step + 0.0001 * seed, activation_memory_mb=memory, peak_memory_mb=None)
                runs.append(m)
    tables = tmp_path / "results" / "tables" / "quick"
    aggregate("rnn", write_runs(tmp_path / "runs", runs), "quick", tables)
    aggregate("feedforward", [], "quick", tables)
    aggregate("parallel", [], "quick", tables)
    md = (tables / "rnn.md").read_text()
    assert "## Cost of one window update vs T" in md and "0.30 ± 0.00 (n=3)" in md and "CUDA peak" not in md
    text = write_report("quick", tables, tmp_path / "results" / "figures" / "quick", tmp_path / "results" / "REPORT.md")
    a1 = text[text.index("### A1: ", text.index("## The question's evidence, cell by cell")):]
    a1 = a1[:a1.index("### A2: ")]
    assert "copy: BPTT activation memory (MiB), T = 2 → 4" in a1 and "copy: BPTT ms per update, T = 2 → 4" in a1
    assert "T = 4 5.10 ± 0.25 (n=3) vs T = 2 3.10 ± 0.25 (n=3)" in a1
    assert a1.count("| holds |") == 2 and "| fails |" in a1  # cost grows; DNI no longer than BPTT: refuted
    assert a1.startswith("### A1: refuted")


def test_family_not_run_still_gets_its_tables(tmp_path):
    aggregate("rnn", [], "smoke", tmp_path)
    assert "not run at this tier" in (tmp_path / "rnn.md").read_text()
    runs = pd.read_csv(tmp_path / "rnn_runs.csv")
    assert runs.empty and list(runs.columns) == get("rnn").tables().RUN_COLUMNS


@pytest.mark.parametrize("breakage, message", [
    ("truncated", "cannot read metrics"),
    ("incomplete", "not a complete sgbench ff_metrics file"),
    ("other tier", "a run of tier 'paper', not of tier 'quick'"),
    ("missing", "cannot read metrics"),
    ("duplicate", "the same run twice"),
])
def test_bad_metrics_file_is_an_error_naming_it(tmp_path, capsys, breakage, message):
    good, bad = write_runs(tmp_path, [ff_metrics(seed=0), ff_metrics(seed=1, tier="paper")])
    if breakage == "truncated":
        bad.write_text(good.read_text()[:200])
    elif breakage == "incomplete":
        m = ff_metrics(seed=1)
        del m["final"]["test_error"]
        bad.write_text(json.dumps(m))
    elif breakage == "missing":
        bad.unlink()
    elif breakage == "duplicate":
        bad.write_text(json.dumps(ff_metrics(seed=0, test_error=9.0)))
    code = cli.main(["aggregate", "feedforward", str(good), str(bad), "--tier", "quick", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and message in err
    assert not (tmp_path / "t" / "feedforward.md").exists()


def test_report_states_tier_budget_and_every_verdict(tmp_path, monkeypatch):
    from sgbench.claims import render
    tables, figures = tmp_path / "results" / "tables" / "quick", tmp_path / "results" / "figures" / "quick"
    runs = [ff_metrics(m, layers=n, seed=s, test_error=e + 0.1 * s, iterations=2000, curve=(e + 0.1 * s, None))
            for m, e in (("backprop", 3.0), ("dni", 5.0), ("cdni", 4.0), ("no_bprop", 30.0)) for n in (3, 6)
            for s in (0, 1)]
    aggregate("feedforward", write_runs(tmp_path / "runs", runs), "quick", tables)
    aggregate("rnn", [], "quick", tables)
    aggregate("parallel", [], "quick", tables)
    text = write_report("quick", tables, figures, tmp_path / "results" / "REPORT.md")
    assert text == (tmp_path / "results" / "REPORT.md").read_text()
    assert "not the paper-scale replication" in text and "2,000 iterations (at most 0.4 % of [DNI]'s 500,000)" in text
    for claim in claims.CLAIMS:
        assert f"| {claim.id} |" in text and f"**{claim.id}**:" in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith(("| F", "| R", "| Q", "| A"))}
    # seeds paired: every difference is the same in both seeds, so each interval is (nearly) a point
    assert "**reproduced**" in rows["| F1"] and "**reproduced**" in rows["| F2"]
    assert "**inconclusive at this tier**" in rows["| F4"] and "straddles" in rows["| F4"]  # same gap at both depths
    assert "**inconclusive at this tier**" in rows["| R1"] and "no cell" in rows["| R1"]
    assert "| rnn | 0 |" in text and "| parallel | 0 |" in text
    assert "[DNI] Table 1 (recalled)" in text and "5.05 ± 0.64 (n=2)" in text and "Test CPU" in text
    assert "n=2, paired" in rows["| F2"] and "fails (mnist CNN-3, dni: dni 0.9 vs no_bprop 0.9" in rows["| F1"]
    # the question, answered: first section, one row per point, every verdict with its reason
    assert text.index("## The question, answered") < text.index("## What was run") < text.index("## Verdicts")
    assert "**inconclusive at this tier**" in rows["| A7"] and "no unlock runs beside No Bprop" in rows["| A7"]
    assert "**inconclusive at this tier**" in rows["| Q2"] and "no (task, T) with both DNI and BPTT" in rows["| Q2"]
    assert "**refuted**" in rows["| A6"]                       # here every SG step is as slow as backprop's
    assert "Learning rate: tuning ruleset **the same budget per method**: tier `quick`" in text
    # the quick tier tunes every method alike; a tier that chose its rate on backprop alone (the long tier,
    # the older ruleset) says so beside F1 / F2 / F4, the records marked `tuned`
    caveat = "was chosen on backprop alone (the older ruleset), so this verdict measures that protocol as much as DNI"
    assert not any(caveat in rows[f"| {c}"] for c in ("F1", "F2", "F3", "F4"))
    monkeypatch.setattr(render, "backprop_alone", lambda tier: 1e-3)
    older = write_report("quick", tables, figures, tmp_path / "older.md")
    older_rows = {line.split(" | ")[0]: line for line in older.splitlines() if line.startswith("| F")}
    assert all(caveat in older_rows[f"| {c}"] for c in ("F1", "F2", "F4")) and caveat not in older_rows["| F3"]
    assert "(figures/quick/ff_test_error.png)" in text and "(tables/quick/feedforward.md)" in text


def test_figures_are_drawn_for_runs_and_for_families_not_run(tmp_path):

    ff = [ff_metrics(m, seed=s, test_error=e + s, update_prob=p) for m, e, p in
          (("backprop", 3.0, None), ("dni", 5.0, None), ("unlock", 8.0, 1.0), ("dni", 7.0, 0.2)) for s in (0, 1)]
    rnn = [rnn_metrics(m, T=t, seed=s, length=3 + t + s) for m in ("bptt", "dni") for t in (2, 4) for s in (0, 1)]
    aggregate("feedforward", write_runs(tmp_path / "ff", ff), "quick", tmp_path / "t")
    aggregate("rnn", write_runs(tmp_path / "rnn", rnn), "quick", tmp_path / "t")
    aggregate("rnn", [], "smoke", tmp_path / "empty")
    drawn = draw("feedforward", "quick", tmp_path / "t", tmp_path / "f")
    drawn += draw("rnn", "quick", tmp_path / "t", tmp_path / "f")
    drawn += draw("rnn", "smoke", tmp_path / "empty", tmp_path / "none")
    assert len(drawn) == 9   # feed-forward 3 (test error, unlock, time to target), RNN 3 twice
    for png in drawn:
        assert png.stat().st_size > 5000 and png.with_suffix(".pdf").stat().st_size > 1000


def charlm_metrics(method="dni", T=4, seed=0, bpc=3.0, status="completed"):
    """A complete char-LM metrics.json (a diverged one has no final bpc)."""
    bad = status == "diverged"
    m = {"schema": "sgbench.charlm_metrics/1", "status": status, "experiment": "charlm", "tier": "quick",
         "config": {"corpus": "tiny", "method": method, "T": T, "seed": seed, "timesteps": 400, "batch_size": 4,
                    "hidden_size": 16, "lr": 1e-3, "sg_scale": 0.1, "sg_discount": 0.9, "tier": "quick",
                    "device": "cpu"},
         "dataset": {"name": "tiny", "source": "/data", "vocab_size": 40, "chars": {"train": 1, "valid": 1, "test": 1},
                     "works": {}},
         "model": {"parameters": 100, "sg_parameters": 0},
         "curves": {"timestep": [200, 400], "train_bpc": [4.0, bpc], "valid_bpc": [4.0, bpc],
                    "boundary_target_norm": [1.0, 1.0], "boundary_sg_norm": [None, None],
                    "boundary_target_cosine": [None, None], "elapsed_s": [1.0, 2.0]},
         "final": {"valid_bpc": None if bad else bpc, "test_bpc": None if bad else bpc, "best_valid_bpc": bpc},
         "timing": {"wall_time_s": 3.0, "train_time_s": 2.0, "timesteps_per_s": 200.0},
         "meta": {"git_commit": "abc123", "python": "3.11", "torch": "2", "device": "cpu", "hostname": "h",
                  "hardware": {"cpu": "Test CPU", "cpu_count": 2, "torch_threads": 1}, "started_at": "now",
                  "resumed": False}}
    if bad:
        m["diverged"] = {"step": 300, "last_finite": {"train_bpc": 4.0, "valid_bpc": 4.0}}
    return m


def test_a_report_over_diverged_seeds_builds_and_scores_them_at_their_worst(tmp_path):
    """One diverged RNN DNI copy seed (no cosines, no lag: `report` used to exit 2 on it), one diverged
    char-LM seed (no bpc: its table used to show n=2) and one diverged feed-forward seed: every table keeps
    n = 3 and every claim reads them at the metric's declared worst value (analysis.stats.METRICS)."""
    rnn, charlm, ff = [], [], []
    for seed in (0, 1, 2):
        for method in ("bptt", "dni"):
            m = rnn_metrics(method, T=2, seed=seed, length=5)
            if method == "dni" and seed == 2:
                m["status"], m["diverged"] = "diverged", {"step": 3500, "last_finite": {}}
                m["final"].update(signal_sg_cosine=None, signal_linear_cosine=None, N_solved=None,
                                  largest_length_solved=3)
            rnn.append(m)
            charlm.append(charlm_metrics(method, seed=seed, status="diverged" if (method, seed) == ("dni", 1)
                                         else "completed"))
        for method in ("backprop", "dni"):
            m = ff_metrics(method, seed=seed, test_error=2.0 + 0.1 * seed)
            if method == "dni" and seed == 0:
                m["status"], m["diverged"] = "diverged", {"step": 60, "last_finite": {"train_loss": 1.0}}
                m["final"]["test_error"] = 90.0   # what it ended at; scored at the worst, 100
            ff.append(m)
    tables = tmp_path / "results" / "tables" / "quick"
    aggregate("rnn", write_runs(tmp_path / "rnn", rnn), "quick", tables)
    aggregate("charlm", write_runs(tmp_path / "charlm", charlm), "quick", tables)
    aggregate("feedforward", write_runs(tmp_path / "ff", ff), "quick", tables)
    aggregate("parallel", [], "quick", tables)
    assert "| dni      | 4.667 ± " in (tables / "charlm.md").read_text()          # (3 + 8 + 3) / 3, n = 3
    assert "(n=2)" not in (tables / "rnn.md").read_text()
    text = write_report("quick", tables, tmp_path / "results" / "figures" / "quick", tmp_path / "results" / "REPORT.md")
    r3 = text[text.index("### R3: "):text.index("### C1: ")]
    assert "held-out cosine with the exact future gradient -0.30 ± " in r3 and "1 diverged" in r3  # (0.05+0.05-1)/3
    c1 = text[text.index("### C1: "):text.index("### U1: ")]
    assert "dni 4.67 ± " in c1 and "1 diverged" in c1                                # (3 + 8 + 3) / 3
    f2 = text[text.index("### F2: "):text.index("### F3: ")]
    assert "1 diverged" in f2 and "dni 34.77 ± " in f2                                # (100 + 2.1 + 2.2) / 3


def test_time_to_target_is_the_first_evaluation_at_or_below_it():
    """Reached between evaluations: counted at the first evaluation that sees it; never reached: ∞."""
    from sgbench.analysis.tables import time_to_target
    steps, errors, seconds = [100, 200, 300, 400], [9.0, 5.0, None, 2.0], [1.0, 2.0, 3.0, 4.0]
    assert time_to_target(steps, errors, seconds, 6.0) == (200.0, 2.0)     # crossed between 100 and 200
    assert time_to_target(steps, errors, seconds, 5.0) == (200.0, 2.0)     # at the target counts
    assert time_to_target(steps, errors, seconds, 3.0) == (400.0, 4.0)     # a missing evaluation is skipped
    assert time_to_target(steps, errors, seconds, 1.0) == (math.inf, math.inf)


def test_time_to_result_targets_come_from_backprops_curve_and_never_drop_a_seed(tmp_path):
    """Targets: backprop's worst seed at 25 / 50 / 100 % of its budget; a DNI seed that never gets there
    makes DNI's time ∞ (1/2 within budget), and the report and the figure show it."""
    from sgbench.families.feedforward import time_to_result
    runs, curves = [], []
    for method, seed, errs in (("backprop", 0, [8.0, 4.0, 3.0, 2.0]), ("backprop", 1, [9.0, 5.0, 3.5, 2.5]),
                               ("dni", 0, [9.0, 6.0, 4.0, 3.0]), ("dni", 1, [9.5, 9.0, 8.0, 7.0])):
        runs.append({"dataset": "mnist", "arch": "fcn", "layers": 3, "method": method, "update_prob": 1.0,
                     "seed": seed, "iterations": 400})
        curves += [{"dataset": "mnist", "arch": "fcn", "layers": 3, "method": method, "update_prob": 1.0, "seed": seed,
                    "step": s, "test_error": e, "val_error": e, "elapsed_s": s / 100} for s, e in
                   zip((100, 200, 300, 400), errs)]
    runs, curves = pd.DataFrame(runs), pd.DataFrame(curves)
    goals = time_to_result.targets(runs, curves)
    assert list(goals["target"]) == [9.0, 5.0, 2.5]                      # worst backprop seed at 100, 200, 400
    table = time_to_result.stats(time_to_result.per_seed(runs, curves)).set_index(["method", "fraction"])
    assert table.loc[("dni", 0.5), "reached"] == 1 and table.loc[("dni", 0.5), "seconds"] == math.inf
    assert table.loc[("dni", 0.25), "iterations"] == 150 and table.loc[("backprop", 1.0), "iterations"] == 400
    assert table.loc[("dni", 0.25), "ratio_seconds"] == pytest.approx(1.5)       # 1.5 s vs backprop 1.0 s
    md = time_to_result.markdown(table.reset_index())
    assert "∞ (1/2)" in md and "∞ (0/2)" in md and "400 ± 0; 4.0 ± 0.0 s; 1.00× (2/2)" in md
    # a DNI seed that diverged before its first evaluation logged nothing: it is ∞ in its cell, not dropped
    runs = pd.concat([runs, pd.DataFrame([runs.iloc[-1].to_dict() | {"seed": 2}])], ignore_index=True)
    table = time_to_result.stats(time_to_result.per_seed(runs, curves)).set_index(["method", "fraction"])
    assert table.loc[("dni", 0.25), "n"] == 3 and table.loc[("dni", 0.25), "reached"] == 2
    assert table.loc[("dni", 0.25), "iterations"] == math.inf
