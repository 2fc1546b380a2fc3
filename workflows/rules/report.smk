# Stage 5: the replication report of the tier: every claim of [DNI], our numbers and a verdict, and
# each family's own section.


rule report:
    input:
        tables=[table(family, key) for family in FAMILIES for key in family.outputs],
        figures=[figure_files(family, "png") for family in FAMILIES],
    output:
        report(REPORT_MD, caption="../report/replication_report.rst", category="Replication report"),
    conda:
        "../envs/sgbench.yaml"
    log:
        f"logs/report/{TIER}.log",
    params:
        tier=TIER,
        tables=lambda wildcards, input: os.path.dirname(input.tables[0]),
        figures=lambda wildcards, input: os.path.dirname(input.figures[0]),
    shell:
        "sgbench report --tier {params.tier} --tables {params.tables} --figures {params.figures} "
        "--out {output} > {log} 2>&1"
