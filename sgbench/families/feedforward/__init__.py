"""The feedforward experiment family: config.py, run.py (+ seeds.py: several seeds per process;
select_lr.py: the fair short-budget protocol), tables.py, figures.py; its declaration below."""
from ...catalog import methods
from .. import Family
from .config import NON_RESULT_FIELDS

FAMILY = Family(
    name="feedforward", order=10,
    summary="MNIST / CIFAR-10 FCN and CNN: backprop, DNI, cDNI, no-bprop, complete unlock, random layer updates "
            "([DNI] Table 1, Sec. 3.3-3.4)",
    command="train-ff", config="config:FFConfig", runner="seeds:train", run_name="config:run_name",
    schema="ff_metrics", budget="iterations", budget_unit="iterations",
    outputs={"runs": "feedforward_runs.csv", "curves": "feedforward_curves.csv", "table1_md": "feedforward.md",
             "table1_csv": "feedforward.csv", "unlock_md": "unlock.md", "unlock_csv": "unlock.csv"},
    figures=("ff_test_error", "unlock_test_error", "ff_time_to_target"),
    report_tables=(("table1_md", "Table 1 layout"), ("unlock_md", "complete unlock / update probability")),
    non_result=frozenset(NON_RESULT_FIELDS), chosen_lr=True,
    cluster={"mem_mb": 16000, "runtime": 1440, "threads": 4},
    command_help=f"one feed-forward run (MNIST/CIFAR-10, FCN/CNN, {'/'.join(methods('feedforward'))})",
    help="One feed-forward run. Defaults are the paper's ([DNI] supplement): 500,000 iterations of batch 256, which "
         "take many hours on a CPU. A quick trial (about 20 s on one CPU core): sgbench train-ff --iterations 300 "
         "--batch-size 64 --sg-hidden-dim 64 --test-limit 1000 --out runs/try. sg_hidden_layers/sg_hidden_dim unset = "
         "the paper's SG for that arch and method; eval_every 0 = 20 evaluations per run. Rerunning a killed run "
         "resumes it; rerunning a finished one skips it (--force trains it again).",
)
