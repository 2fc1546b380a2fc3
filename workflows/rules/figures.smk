# Stage 4: the figures of each family (PNG for the reports, PDF for papers), from the tidy tables.


rule figures_ff:
    input:
        runs=table("feedforward", "runs"),
        curves=table("feedforward", "curves"),
    output:
        report(f"{FIGURES}/ff_test_error.png", caption="../report/ff_test_error.rst", category="Feed-forward"),
        report(f"{FIGURES}/unlock_test_error.png", caption="../report/unlock_test_error.rst", category="Feed-forward"),
        figure_files("feedforward", "pdf"),
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/figures/{TIER}/feedforward.log",
    params:
        tier=TIER,
        tables=lambda wildcards, input: os.path.dirname(input.runs),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "sgbench figures feedforward --tier {params.tier} --tables {params.tables} --out {params.out} > {log} 2>&1"


rule figures_rnn:
    input:
        runs=table("rnn", "runs"),
        curves=table("rnn", "curves"),
    output:
        report(f"{FIGURES}/rnn_length_vs_T.png", caption="../report/rnn_length_vs_T.rst", category="RNN"),
        report(f"{FIGURES}/rnn_boundary_gradients.png", caption="../report/rnn_boundary_gradients.rst", category="RNN"),
        report(f"{FIGURES}/rnn_curriculum.png", caption="../report/rnn_curriculum.rst", category="RNN"),
        figure_files("rnn", "pdf"),
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/figures/{TIER}/rnn.log",
    params:
        tier=TIER,
        tables=lambda wildcards, input: os.path.dirname(input.runs),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "sgbench figures rnn --tier {params.tier} --tables {params.tables} --out {params.out} > {log} 2>&1"


rule figures_diagnostics:
    input:
        runs=table("diagnostics", "runs"),
        curves=table("diagnostics", "curves"),
        fidelity=table("diagnostics", "fidelity"),
    output:
        report(f"{FIGURES}/diag_fidelity.png", caption="../report/diag_fidelity.rst", category="Diagnostics"),
        report(f"{FIGURES}/diag_placement.png", caption="../report/diag_placement.rst", category="Diagnostics"),
        report(f"{FIGURES}/diag_warmup.png", caption="../report/diag_warmup.rst", category="Diagnostics"),
        report(f"{FIGURES}/diag_sg_cost.png", caption="../report/diag_sg_cost.rst", category="Diagnostics"),
        figure_files("diagnostics", "pdf"),
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/figures/{TIER}/diagnostics.log",
    params:
        tier=TIER,
        tables=lambda wildcards, input: os.path.dirname(input.runs),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "sgbench figures diagnostics --tier {params.tier} --tables {params.tables} --out {params.out} > {log} 2>&1"


rule figures_parallel:
    input:
        runs=table("parallel", "runs"),
        curves=table("parallel", "curves"),
        model=table("parallel", "model"),
    output:
        report(f"{FIGURES}/parallel_speed.png", caption="../report/parallel_speed.rst", category="Parallel workers"),
        figure_files("parallel", "pdf"),
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/figures/{TIER}/parallel.log",
    params:
        tier=TIER,
        tables=lambda wildcards, input: os.path.dirname(input.runs),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "sgbench figures parallel --tier {params.tier} --tables {params.tables} --out {params.out} > {log} 2>&1"
