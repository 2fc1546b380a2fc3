# Stage 3: every metrics.json of a family into tidy tables (Markdown to read, CSV to reuse), one rule
# per family. A family the tier does not run still gets its tables, saying so.
for family in FAMILIES:

    rule:
        name:
            f"aggregate_{family.name}"
        input:
            metrics_files(family),
        output:
            [
                (
                    report(table(family, key), caption=report_caption(f"{family.name}_{key}"), category="Tables")
                    if report_caption(f"{family.name}_{key}")
                    else table(family, key)
                )
                for key in family.outputs
            ],
        localrule: True
        conda:
            "../envs/sgbench.yaml"
        log:
            f"logs/aggregate/{TIER}/{family.name}.log",
        params:
            family=family.name,
            tier=TIER,
            out=lambda wildcards, output: os.path.dirname(output[0]),
        shell:
            "sgbench aggregate {params.family} {input} --tier {params.tier} --out {params.out} > {log} 2>&1"
