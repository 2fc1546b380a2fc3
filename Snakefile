# sgbench replication grid.  `snakemake --cores all` runs the default (quick) tier;
# `snakemake --cores all --config tier=smoke` (or tier=paper) picks another.
# Stages, one file each in workflows/rules/: data -> train -> aggregate -> figures -> report.
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


rule all:
    default_target: True
    input:
        REPORT_MD,
        [table(family, key) for family in sgreport.OUTPUTS for key in sgreport.OUTPUTS[family]],
        [figure_files(family, suffix) for family in sgreport.FIGURES for suffix in ("png", "pdf")],
