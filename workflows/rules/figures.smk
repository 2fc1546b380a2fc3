# Stage 4: the figures of each family (PNG for the reports, PDF for papers), from its tidy tables.
for family in FAMILIES:

    rule:
        name:
            f"figures_{family.name}"
        input:
            [table(family, key) for key in family.outputs],
        output:
            [
                report(f"{FIGURES}/{name}.png", caption=report_caption(name), category=family.name)
                for name in family.figures
            ],
            figure_files(family, "pdf"),
        localrule: True
        conda:
            "../envs/sgbench.yaml"
        log:
            f"logs/figures/{TIER}/{family.name}.log",
        params:
            family=family.name,
            tier=TIER,
            tables=lambda wildcards, input: os.path.dirname(input[0]),
            out=lambda wildcards, output: os.path.dirname(output[0]),
        shell:
            "sgbench figures {params.family} --tier {params.tier} --tables {params.tables} --out {params.out} > {log} 2>&1"
