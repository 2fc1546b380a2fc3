# Stage 2: one job per run of the grid, one rule per experiment family (from the registry); its
# output is the run's metrics.json. A killed feed-forward job leaves a checkpoint beside it, and
# rerunning resumes from there. A timing job (parallel family) reserves every core Snakemake was
# given (threads are capped at --cores), so nothing else shares its CPUs; rerunning restarts it.
for family in FAMILIES:

    rule:
        name:
            f"train_{family.name}"
        input:
            data=(lambda wildcards, family=family: f"results/data/{RUNS[family.name][wildcards.run].dataset}.json")
            if family.needs_data
            else [],
        output:
            f"results/runs/{family.name}/{TIER}/{{run}}/metrics.json",
        conda:
            "../envs/sgbench.yaml"
        log:
            f"logs/train_{family.name}/{TIER}/{{run}}.log",
        params:
            command=family.command,
            flags=lambda wildcards, family=family: sggrid.run_flags(
                family.name, RUNS[family.name][wildcards.run], config["device"]
            ),
            data=data_flags() if family.needs_data else "",
            threads=lambda wildcards, threads, family=family: "" if family.timing else f"--threads {threads}",
            out=lambda wildcards, output: os.path.dirname(output[0]),
        threads: train_threads(family)
        resources:
            **train_resources(family),
        shell:
            "sgbench {params.command} {params.flags} {params.data} {params.threads} --out {params.out} > {log} 2>&1"
