# Stage 3: every metrics.json of the tier into one table (Markdown + CSV).


rule summarize_ff:
    input:
        expand(f"results/runs/feedforward/{TIER}/{{run}}/metrics.json", run=sorted(FF_RUNS)),
    output:
        md=f"results/tables/{TIER}/feedforward.md",
        csv=f"results/tables/{TIER}/feedforward_runs.csv",
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/summarize_ff/{TIER}.log",
    shell:
        "sgbench summarize {input} --md {output.md} --csv {output.csv} > {log} 2>&1"
