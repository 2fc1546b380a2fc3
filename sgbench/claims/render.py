"""REPORT.md: what was run, every claim's verdict with its evidence, each family's own section, the
tables and figures, and the sources. Torch-free."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import runtime
from ..analysis.lr_selection import backprop_alone, protocol_text
from ..analysis.reference import load_reference
from ..analysis.stats import CI_TEXT
from ..analysis.tables import NOT_RUN, budget_text, read_table
from ..families import FAMILIES, get
from ..families.parallel.tables import RUN_COLUMNS as PARALLEL_RUN_COLUMNS
from .answers import POINTS
from .records import Measured, Record, measured_from_runs
from .rules import CLAIMS, measured_from_paper, sg_signal
from .verdicts import Check
from .verdicts import CONTRADICTED, INCONCLUSIVE, REFUTED, REPRODUCED, SUPPORTED


@dataclass(frozen=True)
class Outcome:
    claim: Record
    ours: Check
    paper: Check


def evaluate(ours: Measured, paper: Measured) -> list[Outcome]:
    return [Outcome(c, c.check(ours), c.check(paper)) for c in CLAIMS]


def paper_for(outcome: Outcome, key: tuple | None) -> str:
    """[DNI]'s numbers for the cell that decided our verdict (else the paper's own deciding cell)."""
    cells = {e.key: e for e in outcome.paper.evidence}
    e = cells.get(key) if key is not None else outcome.paper.deciding()
    if e:
        return f"{e.label}: {e.numbers}"
    return "no [DNI] number for this cell" if outcome.paper.evidence else ""


def rule_on_paper(outcome: Outcome) -> str:
    """Whether the rule holds on [DNI]'s own numbers; where it fails, the cell that breaks it."""
    if outcome.paper.verdict == CONTRADICTED:
        return f"fails ({outcome.paper.deciding().label}: {outcome.paper.deciding().numbers})"
    return "holds" if outcome.paper.verdict == REPRODUCED else "no numbers to apply it to"


def why(check: Check) -> str:
    """The reason an inconclusive verdict gives (— for a decided one)."""
    return check.reason if check.verdict == INCONCLUSIVE else "—"


def load_runs(tables: Path) -> dict[str, pd.DataFrame]:
    """Every registered family's runs table (empty where the tables folder has none)."""
    return {f.name: read_table(tables / f.outputs["runs"]) if (tables / f.outputs["runs"]).exists() else pd.DataFrame()
            for f in FAMILIES}


def measured(runs: dict[str, pd.DataFrame], tables: Path) -> Measured:
    """Every family's runs (load_runs), with the feed-forward curves that time to result reads (A4)."""
    curves = Path(tables) / get("feedforward").outputs["curves"]
    par = runs.get("parallel", pd.DataFrame())
    return measured_from_runs(runs.get("feedforward", pd.DataFrame()), runs.get("rnn", pd.DataFrame()),
                              pd.DataFrame(columns=PARALLEL_RUN_COLUMNS) if par.empty else par,
                              runs.get("diagnostics"), runs.get("charlm"),
                              read_table(curves) if curves.exists() else None)


def tuning_caveat(tier: str) -> str:
    """Beside F1 / F2 / F4 when backprop alone chose the tier's rate (issue #23's motivation)."""
    lr = backprop_alone(tier)
    return "" if lr is None else (f" The learning rate ({lr:g}) was chosen on backprop alone (the older ruleset), "
                                  "so this verdict measures that protocol as much as DNI.")


def families_table(runs: dict[str, pd.DataFrame]) -> str:
    """What was run at this tier, family by family: runs, seeds, budgets, data, hardware, code version."""
    lines = ["| family | runs | seeds | budget | data | hardware | sgbench commit |",
             "| --- | ---: | --- | --- | --- | --- | --- |"]
    for family in FAMILIES:
        df = runs.get(family.name, pd.DataFrame())
        if df.empty:
            lines.append(f"| {family.name} | 0 | — | — | — | — | {NOT_RUN} |")
            continue
        where = "; ".join(sorted({f"{d}: {h}, {t} thread(s)" for d, h, t in
                                  df[["device", "hardware", "threads"]].itertuples(index=False)}))
        commits = ", ".join(sorted({str(c) for c in df["git_commit"]}))
        seeds = ", ".join(str(s) for s in sorted(df["seed"].unique()))
        data = next((", ".join(sorted(map(str, df[c].unique()))) for c in ("dataset", "task", "corpus") if c in df),
                    "—")  # what the family's runs read
        lines.append(f"| {family.name} | {len(df)} | {seeds} | {budget_text(df, family.budget, family.budget_unit)} | "
                     f"{data} | {where} | {commits} |")
    return "\n".join(lines)


def tier_warning(tier: str, ff_runs: pd.DataFrame, rnn_runs: pd.DataFrame, reference: dict) -> str:
    """Below [DNI]'s budgets a verdict judges the qualitative claim only: the report says so first."""
    paper_iters = reference["budgets"]["feedforward_iterations"]
    ff = "no feed-forward runs" if ff_runs.empty else (
        f"feed-forward runs of {budget_text(ff_runs, 'iterations', 'iterations')} "
        f"(at most {100 * ff_runs['iterations'].max() / paper_iters:.2g} % of [DNI]'s {paper_iters:,})")
    rnn = "no RNN runs" if rnn_runs.empty else (
        f"RNN runs of {budget_text(rnn_runs, 'timesteps', 'stream time steps')} (sgbench's choice: "
        "[DNI]'s RNN budget is not in sgbench/reference.yaml)")
    if tier == "paper" and not ff_runs.empty and ff_runs["iterations"].min() >= paper_iters:
        return (f"Tier **paper**: {ff}; {rnn}. Verdicts compare with [DNI]'s numbers, whose recalled/verified "
                "status is shown with each.")
    return (f"**Tier {tier}: not the paper-scale replication.** It has {ff}; {rnn}. A verdict at this tier "
            "judges the qualitative claim only (which method is better, roughly by how much); its numbers are "
            "not comparable with [DNI]'s. The paper-scale replication is the `paper` tier.")


def relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def signal_lines(m: Measured) -> list[str]:
    """The SG's signal in plain words, beside R3 and Q2 (none without DNI runs that measured it)."""
    text = sg_signal(m)
    return [f"Beside R3 and Q2: {text}\n"] if text else []


def verdict_table(outcomes: list[Outcome], tier: str, reference: dict) -> list[str]:
    """One row per claim: [DNI]'s value, ours for the deciding cell, the verdict (with the tuning caveat of a
    record that reads the tier's learning rate), the rule on [DNI]'s numbers."""
    caveat = tuning_caveat(tier)
    lines = [f"| claim | in short | [DNI] | ours (tier {tier}; 95 % interval of the difference) | verdict | "
             "why inconclusive | rule on [DNI]'s numbers |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        decided = o.ours.deciding()
        ours = f"{decided.label}: {decided.numbers}" if decided else "—"
        paper = "; ".join(filter(None, (o.claim.paper(reference), paper_for(o, decided.key if decided else None))))
        note = f".{caveat}" if o.claim.tuned and caveat else ""
        lines.append(f"| {o.claim.id} | {o.claim.says} | {paper} | {ours} | **{o.ours.verdict}**{note} | "
                     f"{why(o.ours)} | "
                     f"{rule_on_paper(o)} |")
    return lines + ["", "Each row shows the cell behind the verdict: the first where the rule fails, else the first "
                    "undecided one, else the one whose interval clears the threshold by least; every cell is listed "
                    "below.\n"]


def rules_section(outcomes: list[Outcome]) -> list[str]:
    return ["## Verdict rules\n",
            "Each rule compares, cell by cell, the 95 % interval of a difference between methods (paired over "
            "shared seeds, else Welch) with its threshold: the cell *holds* when the whole interval is on the "
            "claim's side, *fails* when it is on the other side, and is *undecided* otherwise, or when the "
            "methods were still improving at the end by more than the interval's clearance. "
            f"*{REPRODUCED}*: every cell holds; *{CONTRADICTED}*: one fails; *{INCONCLUSIVE}*: otherwise, with "
            "the reason (too few seeds, budget too short, interval straddling the threshold, no power, a baseline "
            "that did not train, or no cell). A "
            "diverged run counts against its method at the metric's worst value (declared with the metric: "
            "`sgbench/analysis/stats.py`). The competence gate (`sgbench/claims/gate.py`): a cell where every seed "
            "of both compared methods sits at the metric's floor (RNN: no length beyond the curriculum's first "
            "two levels or T − 1; test error at chance) has *no power*; a cell whose baseline misses the "
            "competence its rule declares (below) was not trained at this tier; both are undecided with that "
            "reason. Still improving: feed-forward error, RNN curriculum length and char-LM validation bpc over "
            "the last tenth of the steps. [DNI]'s numbers are compared as "
            "they stand. Each claim is one record in `sgbench/claims/rules.py`; the statistics in `docs/statistics.md`.\n"] + [f"- **{o.claim.id}**: {o.claim.rule_text().rstrip('.')}." for o in outcomes]


def _state(e) -> str:
    return e.decision.state + (f": {e.decision.reason}" if e.decision.reason else "")


def evidence_section(outcomes: list[Outcome]) -> list[str]:
    """Every cell each rule compared, ours beside [DNI]'s."""
    lines = ["", "## Evidence, cell by cell\n"]
    for o in outcomes:
        lines.append(f"### {o.claim.id}: {o.ours.verdict}\n")
        if not o.ours.evidence:
            lines.append(f"{o.ours.reason.capitalize()} (family `{o.claim.family}`).\n")
            continue
        lines += ["| cell | ours | [DNI] | cell |", "| --- | --- | --- | --- |"]
        paper_cells = {e.key: e for e in o.paper.evidence}
        for e in o.ours.evidence:
            theirs = paper_cells[e.key].numbers if e.key in paper_cells else "—"
            lines.append(f"| {e.label} | {e.numbers} | {theirs} | {_state(e)} |")
        lines.append("")
    return lines


def answers_evidence_section(m: Measured) -> list[str]:
    """Every cell each point of the question compared (its table above shows the deciding one)."""
    lines = ["", "## The question's evidence, cell by cell\n"]
    for point in POINTS:
        check = point.check(m)
        lines.append(f"### {point.id}: {check.verdict}\n")
        if not check.evidence:
            lines.append(f"{check.reason.capitalize()}.\n")
            continue
        lines += ["| cell | ours | cell |", "| --- | --- | --- |"]
        lines += [f"| {e.label} | {e.numbers} | {_state(e)} |" for e in check.evidence] + [""]
    return lines


def answers_section(tier: str, m: Measured) -> list[str]:
    """The question, answered: one row per point, its experiment, the numbers, the verdict, a plain answer."""
    lines = ["## The question, answered\n",
             "Each point researchers raise about synthetic gradients (Q), and each claim of the usual answers (A), "
             f"tested by this tier's runs: *{SUPPORTED}* / *{REFUTED}* when the 95 % intervals decide, "
             f"*{INCONCLUSIVE}* otherwise (the reason says why). Rules: `sgbench/claims/answers.py`; statistics: "
             "`docs/statistics.md`.\n",
             f"| point | in short | experiment (tier {tier}) | numbers (95 % interval) | verdict | answer |",
             "| --- | --- | --- | --- | --- | --- |"]
    for point in POINTS:
        check = point.check(m)
        decided = check.deciding()
        numbers = f"{decided.label}: {decided.numbers}" if decided else "—"
        if check.verdict == INCONCLUSIVE:
            numbers += f" ({check.reason})" if decided else f"{check.reason}"
            numbers = numbers.removeprefix("—")
        cells = f"; {len(check.evidence)} cell(s)" if check.evidence else ""
        lines.append(f"| {point.id} | {point.says} | {point.experiment}{cells} | {numbers} | **{check.verdict}** | "
                     f"{point.answers[check.verdict]} |")
    return lines + [""] + signal_lines(m) + ["Rules, point by point:\n"] + [f"- **{p.id}**: {p.rule_text()}." for p in POINTS] + [""]


def links_section(tables: Path, figures: Path, here: Path) -> list[str]:
    """The tier's tables (linked) and figures (shown), family by family, relative to the report's folder."""
    lines = ["## Tables\n"]
    for family in FAMILIES:
        for key, title in family.report_tables:
            lines.append(f"- [{title}]({relative(tables / family.outputs[key], here)}) (CSV beside it)")
    lines += ["", "## Figures\n"]
    for png in (figures / f"{name}.png" for family in FAMILIES for name in family.figures):
        lines.append(f"![{png.stem}]({relative(png, here)})\n\n[PDF]({relative(png.with_suffix('.pdf'), here)})\n")
    return lines


def sources_section(reference: dict) -> list[str]:
    lines = ["## Sources\n", f"[DNI] {reference['citation']['text']}\n",
             "Numbers copied from it live in `sgbench/reference.yaml`, each table with its status "
             "(*verified*: read in the paper; *recalled*: from memory of it, to be checked against the PDF):\n"]
    return lines + [f"- {reference[key]['source']}: **{reference[key]['status']}**"
                    for key in ("budgets", "table1", "rnn_largest_length", "unlock", "async_updates", "parallel_speed")]


def family_sections(tier: str, tables: Path) -> list[str]:
    """Each family's own section of the report, where its tables module has one (`report_section`)."""
    lines = []
    for family in FAMILIES:
        section = getattr(family.tables(), "report_section", None)
        if section is not None:
            lines += section(tier, tables)
    return lines


def render(tier: str, runs: dict[str, pd.DataFrame], tables: Path, figures: Path, out: Path) -> str:
    """The Markdown of REPORT.md: context, the question answered, what was run (and the learning-rate
    protocol), verdicts, rules, per-claim evidence, each family's own section, tables, figures, sources. `runs`: each family's runs table (load_runs)."""
    reference = load_reference()
    ff_runs, rnn_runs = runs.get("feedforward", pd.DataFrame()), runs.get("rnn", pd.DataFrame())
    ours = measured(runs, tables)
    outcomes = evaluate(ours, measured_from_paper(reference))
    parts = [f"# sgbench replication report: tier `{tier}`\n",
             "Replication of [DNI] (Jaderberg et al., *Decoupled Neural Interfaces using Synthetic Gradients*, "
             "ICML 2017), rebuilt by `snakemake` from this tier's runs.\n",
             "> " + tier_warning(tier, ff_runs, rnn_runs, reference) + "\n",
             *answers_section(tier, ours),
             "## What was run\n", families_table(runs) + "\n",
             f"Learning rate: {protocol_text(tier, ff_runs)}\n",
             f"Uncertainty: {CI_TEXT}.\n",
             "## Verdicts\n",
             *verdict_table(outcomes, tier, reference),
             *signal_lines(ours),
             *rules_section(outcomes),
             *evidence_section(outcomes),
             *answers_evidence_section(ours),
             *family_sections(tier, tables),
             *links_section(tables, figures, out.parent),
             "",
             *sources_section(reference)]
    return "\n".join(parts) + "\n"


def write_report(tier: str, tables: Path, figures: Path, out: Path) -> str:
    """Read the tier's runs tables, apply every rule, write REPORT.md."""
    tables, figures, out = Path(tables), Path(figures), Path(out)
    text = render(tier, load_runs(tables), tables, figures, out)
    runtime.atomic_write_bytes(out, text.encode())
    return text
