"""The charlm experiment family: config.py, run.py, tables.py, figures.py; its declaration below."""
from ...catalog import methods
from .. import Family
from .config import NON_RESULT_FIELDS

FAMILY = Family(
    name="charlm", order=30,
    summary="character-level language modelling (bits per character) with truncated BPTT, DNI, DNI + Aux, BP(λ) "
            "([DNI] Sec. 3.1's third task; on the corpus it names)",
    command="train-charlm", config="config:CharLMConfig", runner="run:train_charlm", run_name="config:run_name",
    schema="charlm_metrics", budget="timesteps", budget_unit="characters per stream",
    outputs={"runs": "charlm_runs.csv", "curves": "charlm_curves.csv", "md": "charlm.md", "csv": "charlm.csv"},
    figures=("charlm_bpc_vs_steps",), report_tables=(("md", "char-LM bits per character"),),
    needs_data=False, non_result=frozenset(NON_RESULT_FIELDS),
    # the RNN's: one LSTM on one stream batch; the paper tier's PTB runs are the longest RNN jobs
    cluster={"mem_mb": 8000, "runtime": 720, "threads": 2},
    command_help=f"one character-level language-model run (a corpus; {' / '.join(methods('charlm'))}; truncation T)",
    help="One char-LM run, [DNI] Sec. 3.1's third task: bits per character on the corpus it names (ptb, a corpus "
         "name in the data root such as shakespeare-gutenberg, or a path; see sgbench/corpus.py).",
)
