# Weight generation (G.pt): zoo runs on the GPU pool -> index -> G.pt -> one-shot samples -> evaluation.

WG = config["weightgen"]
ZOO = "results/zoo/{dataset}"
WG_OUT = "results/weightgen/{dataset}"
WG_CODE = ("weightgen/*", "models/*", "train/*", "data/loader.py")


rule zoo_run:
    output:
        weights=f"{ZOO}/runs/{{task}}_lr{{lr}}_seed{{seed}}.safetensors",
        meta=f"{ZOO}/runs/{{task}}_lr{{lr}}_seed{{seed}}.json",
    input:
        data="results/preprocessed/{dataset}",
        splits="results/splits/{dataset}/splits.json",
        code=sources(*WG_CODE),
    params:
        stem=f"{ZOO}/runs/{{task}}_lr{{lr}}_seed{{seed}}",
        settings=zoo_settings,
        seed=config["seed"],
        device=DEVICE,
    threads: WG["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/zoo/{dataset}/{task}_lr{lr}_seed{seed}.log",
    benchmark:
        "results/benchmarks/zoo/{dataset}/{task}_lr{lr}_seed{seed}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo zoo --data {input.data:q} --splits {input.splits:q} --data-seed {params.seed}"
        " --task {wildcards.task} --lr {wildcards.lr} --seed {wildcards.seed} --settings {params.settings:q}"
        " --out {params.stem:q} --device {params.device} --threads {threads} > {log:q} 2>&1"


rule zoo_index:
    output:
        index=f"{ZOO}/index.csv",
        summary=f"{ZOO}/zoo.json",
    input:
        runs=zoo_runs,
        code=sources(*WG_CODE),
    params:
        max_abs=WG["max_abs_weight"],
    log:
        "results/logs/zoo/{dataset}/index.log",
    benchmark:
        "results/benchmarks/zoo/{dataset}/index.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo zoo-index {input.runs:q} --index {output.index:q} --summary {output.summary:q}"
        " --max-abs-weight {params.max_abs} > {log:q} 2>&1"


rule gpt_train:
    output:
        weights=f"{WG_OUT}/gpt.safetensors",
        meta=f"{WG_OUT}/gpt.json",
        curves=f"{WG_OUT}/gpt_loss.csv",
    input:
        index=rules.zoo_index.output.index,
        runs=zoo_runs,
        code=sources(*WG_CODE),
    params:
        stem=f"{WG_OUT}/gpt",
        runs=f"{ZOO}/runs",
        settings=json.dumps(WG, sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
    threads: WG["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/weightgen/{dataset}/gpt_train.log",
    benchmark:
        "results/benchmarks/weightgen/{dataset}/gpt_train.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo gpt-train --index {input.index:q} --runs-dir {params.runs:q} --seed {params.seed}"
        " --settings {params.settings:q} --out {params.stem:q} --device {params.device} --threads {threads}"
        " > {log:q} 2>&1"


rule gpt_sample:
    output:
        weights=f"{WG_OUT}/samples.safetensors",
        meta=f"{WG_OUT}/samples.json",
        table=f"{WG_OUT}/samples.csv",
    input:
        gpt=rules.gpt_train.output.weights,
        index=rules.zoo_index.output.index,
        data="results/preprocessed/{dataset}",
        splits="results/splits/{dataset}/splits.json",
        code=sources(*WG_CODE),
    params:
        gpt=lambda w, input: input.gpt.removesuffix(".safetensors"),
        stem=f"{WG_OUT}/samples",
        runs=f"{ZOO}/runs",
        settings=json.dumps(WG, sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
    threads: WG["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/weightgen/{dataset}/gpt_sample.log",
    benchmark:
        "results/benchmarks/weightgen/{dataset}/gpt_sample.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo gpt-sample --gpt {params.gpt:q} --index {input.index:q} --runs-dir {params.runs:q}"
        " --data {input.data:q} --splits {input.splits:q} --data-seed {params.seed} --seed {params.seed}"
        " --settings {params.settings:q} --out {params.stem:q} --device {params.device} --threads {threads}"
        " > {log:q} 2>&1"


rule gpt_evaluate:
    output:
        evaluation=report(
            directory(f"{WG_OUT}/evaluation"),
            patterns=["{name}.png"],
            caption="report/weightgen.rst",
            category="Weight generation",
        ),
        metrics="results/metrics/{dataset}/weightgen.json",
    input:
        gpt=rules.gpt_train.output.weights,
        samples=rules.gpt_sample.output.weights,
        table=rules.gpt_sample.output.table,
        index=rules.zoo_index.output.index,
        data="results/preprocessed/{dataset}",
        splits="results/splits/{dataset}/splits.json",
        code=sources(*WG_CODE),
    params:
        gpt=lambda w, input: input.gpt.removesuffix(".safetensors"),
        samples=lambda w, input: input.samples.removesuffix(".safetensors"),
        runs=f"{ZOO}/runs",
        settings=json.dumps(WG, sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
    threads: WG["threads"]
    log:
        "results/logs/weightgen/{dataset}/gpt_evaluate.log",
    benchmark:
        "results/benchmarks/weightgen/{dataset}/gpt_evaluate.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo gpt-evaluate --gpt {params.gpt:q} --samples {params.samples:q} --index {input.index:q}"
        " --runs-dir {params.runs:q} --data {input.data:q} --splits {input.splits:q} --data-seed {params.seed}"
        " --seed {params.seed} --settings {params.settings:q} --out {output.evaluation:q}"
        " --summary {output.metrics:q} --device {params.device}"
        " --threads {threads} > {log:q} 2>&1"
