# Weight generation (G.pt): zoo starts -> zoo jobs on the GPU pool -> index -> G.pt -> one-shot samples
# -> evaluation. Helpers (arms, seed groups, settings) live in common.smk.


rule zoo_start:
    output:
        weights=f"{ZOO}/starts/{{start}}.safetensors",
        sidecar=f"{ZOO}/starts/{{start}}.json",
    input:
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        imported=get_imported_start,
        code=verb_code("zoo-start"),
    params:
        stem=lambda w, output: output.weights.removesuffix(".safetensors"),
        settings=json.dumps(zoo_plan.zoo_settings(config), sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
    threads: WG["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/zoo/{dataset}/starts/{start}.log",
    benchmark:
        "results/benchmarks/zoo/{dataset}/starts/{start}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo zoo-start --data {input.data:q} --splits {input.splits:q} --data-seed {params.seed}"
        " --start {wildcards.start} --settings {params.settings:q} --out {params.stem:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"


rule zoo_job:
    output:
        runs=directory(f"{ZOO}/runs/{{arm}}/job{{group}}"),
    input:
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        start=get_zoo_start,
        code=verb_code("zoo"),
    params:
        runs=zoo_job_runs,
        start=zoo_start_option,
        settings=json.dumps(zoo_plan.zoo_settings(config), sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
        tracking=tracking_option,
    threads: WG["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/zoo/{dataset}/runs/{arm}/job{group}.log",
    benchmark:
        "results/benchmarks/zoo/{dataset}/runs/{arm}/job{group}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo zoo --data {input.data:q} --splits {input.splits:q} --data-seed {params.seed}"
        " {params.runs} {params.start}"
        " --settings {params.settings:q} --out {output.runs:q} --device {params.device} --threads {threads}"
        " {params.tracking} > {log:q} 2>&1"


rule zoo_index:
    output:
        index=f"{ZOO}/index.csv",
        summary=f"{ZOO}/zoo.json",
    input:
        jobs=zoo_jobs,
        code=verb_code("zoo-index"),
    params:
        settings=json.dumps(zoo_plan.index_settings(config), sort_keys=True),
    log:
        "results/logs/zoo/{dataset}/index.log",
    benchmark:
        "results/benchmarks/zoo/{dataset}/index.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo zoo-index {input.jobs:q} --settings {params.settings:q} --index {output.index:q}"
        " --summary {output.summary:q} > {log:q} 2>&1"


rule gpt_train:
    output:
        weights=f"{WEIGHTGEN}/gpt.safetensors",
        sidecar=f"{WEIGHTGEN}/gpt.json",
        curves=f"{WEIGHTGEN}/gpt_loss.csv",
    input:
        index=rules.zoo_index.output.index,
        jobs=zoo_jobs,
        code=verb_code("gpt-train"),
    params:
        stem=lambda w, output: output.weights.removesuffix(".safetensors"),
        settings=json.dumps({"gpt": WG["gpt"]}, sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
        tracking=tracking_option,
    threads: WG["gpt"]["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/weightgen/{dataset}/gpt_train.log",
    benchmark:
        "results/benchmarks/weightgen/{dataset}/gpt_train.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo gpt-train --index {input.index:q} --seed {params.seed} --settings {params.settings:q}"
        " --out {params.stem:q} --device {params.device} --threads {threads} {params.tracking} > {log:q} 2>&1"


rule gpt_sample:
    output:
        weights=f"{WEIGHTGEN}/samples.safetensors",
        sidecar=f"{WEIGHTGEN}/samples.json",
        table=f"{WEIGHTGEN}/samples.csv",
    input:
        gpt=rules.gpt_train.output.weights,
        index=rules.zoo_index.output.index,
        jobs=zoo_jobs,
        code=verb_code("gpt-sample"),
    params:
        gpt=lambda w, input: input.gpt.removesuffix(".safetensors"),
        stem=lambda w, output: output.weights.removesuffix(".safetensors"),
        settings=json.dumps({"sample": WG["sample"]}, sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
    threads: WG["gpt"]["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/weightgen/{dataset}/gpt_sample.log",
    benchmark:
        "results/benchmarks/weightgen/{dataset}/gpt_sample.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo gpt-sample --gpt {params.gpt:q} --index {input.index:q} --seed {params.seed}"
        " --settings {params.settings:q} --out {params.stem:q} --device {params.device} --threads {threads}"
        " > {log:q} 2>&1"


rule gpt_evaluate:
    output:
        evaluation=report(
            directory(f"{WEIGHTGEN}/evaluation"),
            patterns=["{name}.png"],
            caption="report/weightgen.rst",
            category="Weight generation",
        ),
        metrics=f"{METRICS}/weightgen.json",
    input:
        gpt=rules.gpt_train.output.weights,
        curves=rules.gpt_train.output.curves,
        samples=rules.gpt_sample.output.weights,
        table=rules.gpt_sample.output.table,
        index=rules.zoo_index.output.index,
        jobs=zoo_jobs,
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        code=verb_code("gpt-evaluate"),
    params:
        gpt=lambda w, input: input.gpt.removesuffix(".safetensors"),
        samples=lambda w, input: input.samples.removesuffix(".safetensors"),
        settings=json.dumps(zoo_plan.evaluate_settings(config), sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
    threads: WG["gpt"]["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/weightgen/{dataset}/gpt_evaluate.log",
    benchmark:
        "results/benchmarks/weightgen/{dataset}/gpt_evaluate.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo gpt-evaluate --gpt {params.gpt:q} --samples {params.samples:q} --index {input.index:q}"
        " --data {input.data:q} --splits {input.splits:q} --data-seed {params.seed} --seed {params.seed}"
        " --settings {params.settings:q} --out {output.evaluation:q} --summary {output.metrics:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"
