# Training stage: every model x seed of the config, each job on its own GPU when the device is CUDA.


rule train:
    output:
        best="results/train/{dataset}/{model}/seed{seed}/best.safetensors",
        best_meta="results/train/{dataset}/{model}/seed{seed}/best.json",
        final="results/train/{dataset}/{model}/seed{seed}/final.safetensors",
        final_meta="results/train/{dataset}/{model}/seed{seed}/final.json",
        metrics="results/train/{dataset}/{model}/seed{seed}/metrics.json",
    input:
        data="results/preprocessed/{dataset}",
        splits="results/splits/{dataset}/splits.json",
        code=sources("data/loader.py", "models/*", "train/*"),
    params:
        run="results/train/{dataset}/{model}/seed{seed}",
        curves="results/train/{dataset}/{model}/seed{seed}/dvclive/plots",  # for dvc-sync: DVC plots
        settings=train_settings,
        device=DEVICE,
        launch=train_launcher(),
        threads=config["train"]["threads"],  # per process
    threads: config["train"]["threads"] * TRAIN_PROCESSES
    resources:
        gpu=TRAIN_GPUS,
    log:
        "results/logs/train/{dataset}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{model}/seed{seed}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "{params.launch} train --data {input.data:q} --splits {input.splits:q} --model {wildcards.model}"
        " --seed {wildcards.seed} --out {params.run:q} --settings {params.settings:q}"
        " --device {params.device} --threads {params.threads} > {log:q} 2>&1"
