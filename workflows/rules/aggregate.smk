# Stage 3: every metrics.json of a family into tidy tables (Markdown to read, CSV to reuse).
# A family the tier does not run still gets its tables, saying so.


rule aggregate_ff:
    input:
        metrics_files("feedforward"),
    output:
        runs=table("feedforward", "runs"),
        curves=table("feedforward", "curves"),
        table1_md=table("feedforward", "table1_md"),
        table1_csv=report(table("feedforward", "table1_csv"), caption="../report/table1.rst", category="Tables"),
        unlock_md=table("feedforward", "unlock_md"),
        unlock_csv=report(table("feedforward", "unlock_csv"), caption="../report/unlock_table.rst", category="Tables"),
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/aggregate/{TIER}/feedforward.log",
    params:
        tier=TIER,
        out=lambda wildcards, output: os.path.dirname(output.runs),
    shell:
        "sgbench aggregate feedforward {input} --tier {params.tier} --out {params.out} > {log} 2>&1"


rule aggregate_rnn:
    input:
        metrics_files("rnn"),
    output:
        runs=table("rnn", "runs"),
        curves=table("rnn", "curves"),
        md=table("rnn", "md"),
        csv=report(table("rnn", "csv"), caption="../report/rnn_table.rst", category="Tables"),
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/aggregate/{TIER}/rnn.log",
    params:
        tier=TIER,
        out=lambda wildcards, output: os.path.dirname(output.runs),
    shell:
        "sgbench aggregate rnn {input} --tier {params.tier} --out {params.out} > {log} 2>&1"


rule aggregate_diagnostics:
    input:
        metrics_files("diagnostics"),
    output:
        runs=table("diagnostics", "runs"),
        curves=table("diagnostics", "curves"),
        fidelity=table("diagnostics", "fidelity"),
        md=report(table("diagnostics", "md"), caption="../report/diagnostics_table.rst", category="Tables"),
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/aggregate/{TIER}/diagnostics.log",
    params:
        tier=TIER,
        out=lambda wildcards, output: os.path.dirname(output.runs),
    shell:
        "sgbench aggregate diagnostics {input} --tier {params.tier} --out {params.out} > {log} 2>&1"


rule aggregate_parallel:
    input:
        metrics_files("parallel"),
    output:
        runs=table("parallel", "runs"),
        curves=table("parallel", "curves"),
        md=table("parallel", "md"),
        csv=report(table("parallel", "csv"), caption="../report/parallel_table.rst", category="Tables"),
        model=table("parallel", "model"),
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/aggregate/{TIER}/parallel.log",
    params:
        tier=TIER,
        out=lambda wildcards, output: os.path.dirname(output.runs),
    shell:
        "sgbench aggregate parallel {input} --tier {params.tier} --out {params.out} > {log} 2>&1"
