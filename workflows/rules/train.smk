# Stage 2: one job per run of the grid; its output is the run's metrics.json.
# A killed job leaves a checkpoint beside it, and rerunning resumes from there.


rule train_ff:
    input:
        data=lambda wildcards: f"results/data/{FF_RUNS[wildcards.run].dataset}.json",
    output:
        f"results/runs/feedforward/{TIER}/{{run}}/metrics.json",
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/train_ff/{TIER}/{{run}}.log",
    params:
        flags=lambda wildcards: run_flags("feedforward", wildcards.run),
        data=data_flags(),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    threads: config["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    shell:
        "sgbench train-ff {params.flags} {params.data} --threads {threads} --out {params.out} > {log} 2>&1"


rule train_rnn:
    output:
        f"results/runs/rnn/{TIER}/{{run}}/metrics.json",
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/train_rnn/{TIER}/{{run}}.log",
    params:
        flags=lambda wildcards: run_flags("rnn", wildcards.run),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    threads: config["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    shell:
        "sgbench train-rnn {params.flags} --threads {threads} --out {params.out} > {log} 2>&1"


rule train_diagnostics:
    input:
        data=lambda wildcards: f"results/data/{DIAG_RUNS[wildcards.run].dataset}.json",
    output:
        f"results/runs/diagnostics/{TIER}/{{run}}/metrics.json",
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/train_diagnostics/{TIER}/{{run}}.log",
    params:
        flags=lambda wildcards: run_flags("diagnostics", wildcards.run),
        data=data_flags(),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    threads: config["train_threads"]
    resources:
        **TRAIN_RESOURCES,
    shell:
        "sgbench train-ff {params.flags} {params.data} --threads {threads} --out {params.out} > {log} 2>&1"


# A timing run reserves every core this Snakemake was given (threads are capped at --cores), so
# nothing else shares its CPUs; its K workers use `threads` each (the tier file says how many).
# Rerunning restarts it: a timing is not resumed.
rule train_parallel:
    input:
        data=lambda wildcards: f"results/data/{PARALLEL_RUNS[wildcards.run].dataset}.json",
    output:
        f"results/runs/parallel/{TIER}/{{run}}/metrics.json",
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/train_parallel/{TIER}/{{run}}.log",
    params:
        flags=lambda wildcards: run_flags("parallel", wildcards.run),
        data=data_flags(),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    threads: parallel_threads
    shell:
        "sgbench train-parallel {params.flags} {params.data} --out {params.out} > {log} 2>&1"
