# Inference on the test cases, per-case scores, and the comparison tables.


rule infer:
    output:
        directory("results/infer/{dataset}/{model}/seed{seed}"),
    input:
        checkpoint="results/train/{dataset}/{model}/seed{seed}/best.safetensors",
        data="results/preprocessed/{dataset}",
        splits="results/splits/{dataset}/splits.json",
        code=sources("infer.py", "models/*", "train/checkpoint.py", "train/validate.py", "data/preprocess.py"),
    params:
        device=DEVICE,
        sw_batch_size=config["train"]["sw_batch_size"],
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/infer/{dataset}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/infer/{dataset}/{model}/seed{seed}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo infer --checkpoint {input.checkpoint:q} --data {input.data:q} --splits {input.splits:q}"
        " --out {output:q} --device {params.device} --sw-batch-size {params.sw_batch_size} > {log:q} 2>&1"


rule evaluate:
    output:
        "results/evaluate/{dataset}/{model}/seed{seed}.csv",
    input:
        predictions="results/infer/{dataset}/{model}/seed{seed}",
        raw=raw_dataset,
        data="results/preprocessed/{dataset}",
        splits="results/splits/{dataset}/splits.json",
        code=sources("evaluate/cases.py", "evaluate/metrics.py"),
    params:
        tolerance=config["evaluate"]["tolerance_mm"],
    log:
        "results/logs/evaluate/{dataset}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{model}/seed{seed}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo evaluate --predictions {input.predictions:q} --raw {input.raw:q} --data {input.data:q}"
        " --splits {input.splits:q} --model {wildcards.model} --seed {wildcards.seed}"
        " --tolerance-mm {params.tolerance} --out {output:q} > {log:q} 2>&1"


rule compare:
    output:
        tables=report(
            directory("results/tables/{dataset}"),
            patterns=["{name}.html"],
            caption="report/tables.rst",
            category="Tables",
        ),
        metrics="results/metrics/{dataset}/comparison.json",
    input:
        scores=run_outputs("results/evaluate/{dataset}/{model}/seed{seed}.csv"),
        code=sources("evaluate/stats.py", "evaluate/report_tables.py"),
    params:
        metrics=" ".join(config["evaluate"]["metrics"]),
        seed=config["seed"],
    log:
        "results/logs/compare/{dataset}.log",
    benchmark:
        "results/benchmarks/compare/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo compare {input.scores:q} --out-dir {output.tables:q} --summary {output.metrics:q}"
        " --metrics {params.metrics} --seed {params.seed} > {log:q} 2>&1"
