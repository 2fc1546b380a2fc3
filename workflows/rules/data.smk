# Stage 1: make sure each data set of the tier is readable (and decode CIFAR JPEGs once, not per job).


rule prepare_data:
    output:
        "results/data/{dataset}.json",
    conda:
        "../envs/sgbench.yaml"
    log:
        "logs/prepare_data/{dataset}.log",
    params:
        flags=data_flags(),
    shell:
        "sgbench prepare-data --dataset {wildcards.dataset} {params.flags} --out {output} > {log} 2>&1"
