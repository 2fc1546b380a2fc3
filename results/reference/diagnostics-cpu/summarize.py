"""Print the README's tables from tables/diagnostics_{runs,fidelity}.csv (written by run.sh)."""
from pathlib import Path

import pandas as pd

from sgbench import report

here = Path(__file__).parent
runs = pd.read_csv(here / "tables" / "diagnostics_runs.csv")
fid = pd.read_csv(here / "tables" / "diagnostics_fidelity.csv")

print("## Fidelity by boundary, DNI at every boundary: probe at the start / middle / end of the run\n")
every = fid[(fid["dni_placement"] == "every") & (fid["warmup"] == 0)]
for method, g in every.groupby("method"):
    steps = sorted(g["step"].unique())
    picks = [steps[0], steps[len(steps) // 2 - 1], steps[-1]]
    rows = []
    for d in sorted(g["distance"].unique(), reverse=True):
        row = {"boundary (after block)": int(g.loc[g["distance"] == d, "boundary"].iloc[0]) + 1, "d from loss": d}
        for s in picks:
            cell = g[(g["distance"] == d) & (g["step"] == s)]
            row[f"cos @ {s}"] = report.cell_text(report.seed_stats(cell["cosine"]), 3)
            row[f"rel err @ {s}"] = report.cell_text(report.seed_stats(cell["rel_error"]), 2)
        rows.append(row)
    print(f"### {method} (seeds: {', '.join(map(str, sorted(g['seed'].unique())))})\n")
    print(pd.DataFrame(rows).to_markdown(index=False) + "\n")

print("## Final test error (%) and cost\n")
runs["run"] = [("backprop" if r.method == "backprop" else f"{r.method}, {r.dni_placement}, w = {100 * r.warmup:g} %")
               + ("" if r.default_sg else f", SG {r.sg_hidden_layers} hidden, weight {r.sg_loss_weight:g}")
               + f" ({r.dni_boundaries} DNIs)" for r in runs.itertuples()]
rows = []
for name, g in runs.groupby("run", sort=False):
    rows.append({"run": name, "seeds": ", ".join(map(str, sorted(g["seed"]))),
                 "per seed": ", ".join(f"{e:.2f}" for e in g.sort_values("seed")["test_error"]),
                 "test error (%)": report.cell_text(report.seed_stats(g["test_error"])),
                 "steps/s (1 thread)": report.cell_text(report.seed_stats(g["steps_per_s"]), 1)})
print(pd.DataFrame(rows).sort_values("run").to_markdown(index=False))

print("\n## SG model (DNI at every boundary, no warm-up): error, fidelity and cost\n")
sg = runs[(runs["method"] != "backprop") & (runs["dni_placement"] == "every") & (runs["warmup"] == 0)]
rows = []
for (method, hidden, weight), g in sg.groupby(["method", "sg_hidden_layers", "sg_loss_weight"]):
    rows.append({"SG": f"{method} ({'label' if method == 'cdni' else 'no label'}), {hidden} hidden, weight {weight:g}",
                 "seeds": ", ".join(map(str, sorted(g["seed"]))),
                 "test error (%)": report.cell_text(report.seed_stats(g["test_error"])),
                 "late cos top / bottom": f"{g['late_cosine_top'].mean():.3f} / {g['late_cosine_bottom'].mean():.3f}",
                 "steps/s (1 thread)": report.cell_text(report.seed_stats(g["steps_per_s"]), 1)})
print(pd.DataFrame(rows).to_markdown(index=False))
