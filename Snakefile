# sgbench replication grid.  `snakemake --cores all` runs the default (quick) tier;
# `snakemake --cores all --config tier=smoke` (or tier=paper) picks another.
# Rules live in workflows/rules/ by stage; configs in workflows/config/, checked against workflows/schemas/.
from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "workflows/config/config.yaml")


include: "workflows/rules/common.smk"
include: "workflows/rules/data.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        f"results/tables/{TIER}/feedforward.md",
