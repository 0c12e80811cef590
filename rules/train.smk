# Training stage: every model x seed of the config, each job on its own GPU when the device is CUDA.


rule train:
    output:
        best=f"{TRAIN_RUN}/best.safetensors",
        best_sidecar=f"{TRAIN_RUN}/best.json",
        final=f"{TRAIN_RUN}/final.safetensors",
        final_sidecar=f"{TRAIN_RUN}/final.json",
        metrics=f"{TRAIN_RUN}/metrics.json",
    input:
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        plans=rules.plan.output[0],
        code=verb_code("train"),
    params:
        run=TRAIN_RUN,
        fold=fold_option,
        curves=f"{TRAIN_RUN}/dvclive/plots",  # for dvc-sync: DVC plots
        settings=train_settings,
        device=DEVICE,
        launch=train_launcher(),
        threads=config["train"]["threads"],  # per process
        tracking=tracking_option,
    wildcard_constraints:
        model=TRAINED_MODEL_WILDCARD,  # imported nnU-Net models are not trained here
    threads: config["train"]["threads"] * TRAIN_PROCESSES
    resources:
        gpu=TRAIN_GPUS,
    log:
        f"results/logs/train/{{dataset}}/{RUN}.log",
    benchmark:
        f"results/benchmarks/train/{{dataset}}/{RUN}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "{params.launch} train --data {input.data:q} --splits {input.splits:q} --model {wildcards.model}"
        " --seed {wildcards.seed} {params.fold} --out {params.run:q} --settings {params.settings:q} --plans {input.plans:q}"
        " --device {params.device} --threads {params.threads} {params.tracking} > {log:q} 2>&1"


# Per region: keep the largest connected component where it raises validation Dice (segzoo.postprocess);
# infer and predict apply the choice.
rule postprocessing:
    output:
        f"{TRAIN_RUN}/postprocessing.json",
    input:
        best=rules.train.output.best,
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        code=verb_code("postprocessing"),
    params:
        device=DEVICE,
        sw_batch_size=config["train"]["sw_batch_size"],
        fold=fold_option,
    wildcard_constraints:
        model=TRAINED_MODEL_WILDCARD,  # imported nnU-Net models are not trained here: no postprocessing
    resources:
        gpu=GPUS_PER_JOB,
    log:
        f"results/logs/postprocessing/{{dataset}}/{RUN}.log",
    benchmark:
        f"results/benchmarks/postprocessing/{{dataset}}/{RUN}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo postprocessing --checkpoint {input.best:q} --data {input.data:q} --splits {input.splits:q} {params.fold}"
        " --out {output:q} --device {params.device} --sw-batch-size {params.sw_batch_size} > {log:q} 2>&1"
