# sgbench replication grid.  `snakemake --cores all` runs the default (quick) tier;
# `snakemake --cores all --config tier=smoke` (or tier=paper) picks another.
# Stages, one file each in workflows/rules/: data -> train -> aggregate -> figures -> report; each
# stage is one rule definition looped over the experiment families of sgbench's registry.
# Configs in workflows/config/, checked against workflows/schemas/. HTML report: snakemake --report report.html
from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "workflows/config/config.yaml")


report: "workflows/report/workflow.rst"


include: "workflows/rules/common.smk"
include: "workflows/rules/data.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/aggregate.smk"
include: "workflows/rules/figures.smk"
include: "workflows/rules/report.smk"


# Light jobs run on the submitting host, not as cluster jobs (aggregate_* and figures_* say so themselves).
localrules:
    all,
    report,


rule all:
    default_target: True
    input:
        REPORT_MD,
        [table(family, key) for family in FAMILIES for key in family.outputs],
        [figure_files(family, suffix) for family in FAMILIES for suffix in ("png", "pdf")],
