# Stage 5: the replication report of the tier: every claim of [DNI], our numbers and a verdict.


rule report:
    input:
        ff_runs=table("feedforward", "runs"),
        rnn_runs=table("rnn", "runs"),
        diag_runs=table("diagnostics", "runs"),
        diag_fidelity=table("diagnostics", "fidelity"),
        parallel_runs=table("parallel", "runs"),
        tables=[table("feedforward", "table1_md"), table("feedforward", "unlock_md"), table("rnn", "md"),
                table("diagnostics", "md"), table("parallel", "md")],
        figures=[figure_files(family, "png") for family in ("feedforward", "rnn", "diagnostics", "parallel")],
    output:
        report(REPORT_MD, caption="../report/replication_report.rst", category="Replication report"),
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/report/{TIER}.log",
    params:
        tier=TIER,
        tables=lambda wildcards, input: os.path.dirname(input.ff_runs),
        figures=lambda wildcards, input: os.path.dirname(input.figures[0]),
    shell:
        "sgbench report --tier {params.tier} --tables {params.tables} --figures {params.figures} "
        "--out {output} > {log} 2>&1"
