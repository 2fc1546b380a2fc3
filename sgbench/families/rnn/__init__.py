"""The rnn experiment family: config.py, run.py (+ signal.py), tables.py, figures.py; its declaration below."""
from ...catalog import methods
from .. import Family
from .config import NON_RESULT_FIELDS

FAMILY = Family(
    name="rnn", order=20,
    summary="copy / repeat copy with truncated BPTT, DNI, DNI + Aux, BP(λ) ([DNI] Sec. 3.1)",
    command="train-rnn", config="config:RNNConfig", runner="run:train_rnn", run_name="config:run_name",
    schema="rnn_metrics", budget="timesteps", budget_unit="stream time steps",
    outputs={"runs": "rnn_runs.csv", "curves": "rnn_curves.csv", "md": "rnn.md", "csv": "rnn.csv",
             "signal_md": "rnn_signal.md"},
    figures=("rnn_length_vs_T", "rnn_boundary_gradients", "rnn_curriculum"),
    report_tables=(("md", "RNN largest length solved"), ("signal_md", "RNN synthetic-gradient signal")),
    needs_data=False, non_result=frozenset(NON_RESULT_FIELDS),
    cluster={"mem_mb": 8000, "runtime": 720, "threads": 2},
    command_help=f"one RNN run (copy / repeat copy; {' / '.join(methods('rnn'))}; truncation T)",
    help="One copy or repeat-copy run with a curriculum, as in [DNI] Sec. 3.1. Values [DNI] does not give are "
         "sgbench's choices (see RNNConfig). A quick trial (about 10 s on one CPU core): "
         "sgbench train-rnn --timesteps 2000 --hidden-size 32 --out runs/try-rnn.",
)
