"""The parallel experiment family: config.py, run.py (+ model.py, the analytic model), tables.py,
figures.py; its declaration below."""
from .. import Family
from .config import METHODS, PROTOCOLS

FAMILY = Family(
    name="parallel", order=50,
    summary="a feed-forward net on K worker processes: single-process and locked backprop, GPipe / 1F1B "
            "pipelines, data parallelism (DDP) and update-unlocked DNI / cDNI stages (throughput, seconds to "
            "target errors, final error, the analytic model to K = 16)",
    command="train-parallel", config="config:ParallelConfig", runner="run:train_parallel", launched="launch:train_launched",
    run_name="config:run_name", schema="parallel_metrics", budget="iterations", budget_unit="iterations",
    outputs={"runs": "parallel_runs.csv", "curves": "parallel_curves.csv", "md": "parallel.md",
             "csv": "parallel.csv", "targets": "parallel_targets.csv", "targets_csv": "parallel_target_stats.csv",
             "model": "parallel_model.csv"},
    figures=("parallel_error_vs_time", "parallel_speed"),
    report_tables=(("md", "parallel workers: throughput, time to target, analytic model"),),
    # Timing runs: threads (per worker) are part of the measurement, so they come from the tier file
    # (and the job's threads are K workers x threads: set by the workflow, not the profile).
    timing=True, non_result=frozenset({"device", "data_root", "download", "save_params"}),
    cluster={"mem_mb": 16000, "runtime": 720},  # K worker processes; FCN-6 / CNN-3 with K up to 7 / 4
    command_help="one feed-forward run on K worker processes (" + "; ".join(
        f"{protocol}: {' / '.join(m for m, spec in METHODS.items() if spec.protocol == protocol)}"
        for protocol in PROTOCOLS) + ")",
    help="One feed-forward run on `workers` processes (torch.distributed), measuring throughput and seconds to "
         "each of `targets` (test errors). Restarts from scratch when rerun. Also runs under torchrun, one process "
         "per worker, so the workers can span machines (docs/cluster.md).",
)
