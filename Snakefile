# segzoo: train, compare and report 3D segmentation models. Rules live in rules/*.smk; each calls the
# `segzoo` CLI, so Snakemake, DVC and SLURM all run the same commands.
#
#   snakemake --cores all                                   # the CPU demo (config.yaml)
#   snakemake --cores all --resources gpu=2                 # same DAG, at most two GPU jobs at once
#   snakemake --cores all --configfile presets/ci.yaml      # tiny settings used by the tests

configfile: "config.yaml"


include: "rules/common.smk"


if config["container"]:  # used under --software-deployment-method apptainer (README "Containers (no sudo)")

    container: config["container"]


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    model=MODEL_WILDCARD,
    seed=r"\d+",
    fold=r"\d+",
    arm=r"grad|adam\d+",  # an arm of the structure-shared generator
    group=r"\d+",


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/weightgen.smk"
include: "rules/report.smk"


# Jobs of a few seconds that read and write small JSON/CSV files: on a cluster they run where Snakemake runs,
# instead of waiting in the queue as sbatch jobs of their own.
localrules:
    splits,
    plan,
    compare,
    compare_oof,
    zoo_index,
    site_index,


rule all:
    input:
        data_targets(),
        train_targets(),
        evaluate_targets(),
        predict_targets(),
        weightgen_targets(),
        expand(PAGE, dataset=DATASET),
        expand(PAPER, dataset=DATASET),
        SITE_INDEX,
    default_target: True


onsuccess:
    print_outputs()
    record_in_dvc()
