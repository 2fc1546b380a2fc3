"""The diagnostics experiment family: feed-forward runs that vary DNI placement, warm-up and the SG
model, trained by the feed-forward runner; config.py (run names), tables.py, figures.py; its declaration below."""
from .. import Family
from ..feedforward.config import NON_RESULT_FIELDS

FAMILY = Family(
    name="diagnostics", order=40,
    summary="why DNI works or fails: SG fidelity, DNI placement, warm-up, SG model",
    command="train-ff", config="sgbench.families.feedforward.config:FFConfig",
    runner="sgbench.families.feedforward.seeds:train", run_name="config:run_name",
    schema="ff_metrics", budget="iterations", budget_unit="iterations",
    outputs={"runs": "diagnostics_runs.csv", "curves": "diagnostics_curves.csv",
             "fidelity": "diagnostics_fidelity.csv", "md": "diagnostics.md"},
    figures=("diag_fidelity", "diag_placement", "diag_warmup", "diag_sg_cost"),
    report_tables=(("md", "diagnostics: placement, fidelity, warm-up, SG model"),),
    non_result=frozenset(NON_RESULT_FIELDS), chosen_lr=True,
    cluster={"mem_mb": 16000, "runtime": 1440, "threads": 4},  # MNIST FCN-6/10, 500k iterations, probe on
)
