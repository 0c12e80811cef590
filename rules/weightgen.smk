# Weight generation (G.pt): zoo starts -> zoo jobs on the GPU pool -> index -> G.pt -> one-shot samples
# -> evaluation. Helpers (arms, seed groups, settings) live in common.smk.


rule zoo_starts:
    output:
        starts=directory(f"{ZOO}/starts"),
    input:
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        imported=get_imported_start,
        plans=zoo_plans_input,
        code=verb_code("zoo-starts"),
    params:
        starts=" ".join(f"--start {s}" for s in zoo_plan.starts(WG)),
        plans=lambda w, input: f"--plans {shlex.quote(input.plans[0])}" if input.plans else "",
        settings=json.dumps(zoo_plan.zoo_settings(config), sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
    threads: WG["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/zoo/{dataset}/starts.log",
    benchmark:
        "results/benchmarks/zoo/{dataset}/starts.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo zoo-starts --data {input.data:q} --splits {input.splits:q} --data-seed {params.seed}"
        " {params.starts} {params.plans} --settings {params.settings:q} --out {output.starts:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"


rule zoo_job:
    output:
        runs=directory(f"{ZOO}/runs/job{{group}}"),
    input:
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        starts=rules.zoo_starts.output.starts,
        code=verb_code("zoo"),
    params:
        runs=zoo_job_runs,
        settings=json.dumps(zoo_plan.zoo_settings(config), sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
        tracking=tracking_option,
    threads: WG["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/zoo/{dataset}/runs/job{group}.log",
    benchmark:
        "results/benchmarks/zoo/{dataset}/runs/job{group}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo zoo --data {input.data:q} --splits {input.splits:q} --data-seed {params.seed}"
        " {params.runs} --starts {input.starts:q}"
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
        settings=json.dumps({**zoo_plan.index_settings(config), "tasks": WG_TASKS}, sort_keys=True),
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
        starts=rules.zoo_starts.output.starts,
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


rule graph_train:
    output:
        weights=f"{WEIGHTGEN}/graph_{{arm}}.safetensors",
        sidecar=f"{WEIGHTGEN}/graph_{{arm}}.json",
        curves=f"{WEIGHTGEN}/graph_{{arm}}_loss.csv",
    input:
        index=rules.zoo_index.output.index,
        jobs=zoo_jobs,
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        code=verb_code("graph-train"),
    params:
        stem=lambda w, output: output.weights.removesuffix(".safetensors"),
        settings=json.dumps({**zoo_plan.zoo_settings(config), "graph": WG["graph"]}, sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
        tracking=tracking_option,
    threads: WG["graph"]["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/weightgen/{dataset}/graph_{arm}_train.log",
    benchmark:
        "results/benchmarks/weightgen/{dataset}/graph_{arm}_train.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo graph-train --index {input.index:q} --arm {wildcards.arm} --data {input.data:q}"
        " --splits {input.splits:q} --data-seed {params.seed} --seed {params.seed} --settings {params.settings:q}"
        " --out {params.stem:q} --device {params.device} --threads {threads} {params.tracking} > {log:q} 2>&1"


rule graph_sample:
    output:
        weights=f"{WEIGHTGEN}/graph_{{arm}}_samples.safetensors",
        sidecar=f"{WEIGHTGEN}/graph_{{arm}}_samples.json",
        table=f"{WEIGHTGEN}/graph_{{arm}}_samples.csv",
    input:
        model=rules.graph_train.output.weights,
        index=rules.zoo_index.output.index,
        jobs=zoo_jobs,
        starts=rules.zoo_starts.output.starts,
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        code=verb_code("graph-sample"),
    params:
        model=lambda w, input: input.model.removesuffix(".safetensors"),
        stem=lambda w, output: output.weights.removesuffix(".safetensors"),
        settings=json.dumps({**zoo_plan.zoo_settings(config), "sample": WG["sample"]}, sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
    threads: WG["graph"]["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/weightgen/{dataset}/graph_{arm}_sample.log",
    benchmark:
        "results/benchmarks/weightgen/{dataset}/graph_{arm}_sample.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo graph-sample --model {params.model:q} --index {input.index:q} --data {input.data:q}"
        " --splits {input.splits:q} --data-seed {params.seed} --seed {params.seed} --settings {params.settings:q}"
        " --out {params.stem:q} --device {params.device} --threads {threads} > {log:q} 2>&1"


rule weightgen_evaluate:
    output:
        evaluation=report(
            directory(f"{WEIGHTGEN}/evaluation"),
            patterns=["{name}.png"],
            caption="report/weightgen.rst",
            category="Weight generation",
        ),
        metrics=f"{METRICS}/weightgen.json",
    input:
        samples=learned_samples,
        losses=learned_losses,
        index=rules.zoo_index.output.index,
        jobs=zoo_jobs,
        starts=rules.zoo_starts.output.starts,
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        code=verb_code("weightgen-evaluate"),
    params:
        samples=lambda w, input: " ".join(f"--samples {shlex.quote(s.removesuffix('.safetensors'))}"
                                          for s in input.samples),
        losses=lambda w, input: " ".join(f"--loss {shlex.quote(n + '=' + p)}"
                                         for n, p in zip(LEARNED_GENERATORS, input.losses)),
        settings=json.dumps(zoo_plan.evaluate_settings(config), sort_keys=True),
        seed=config["seed"],
        device=DEVICE,
    threads: WG["gpt"]["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/weightgen/{dataset}/evaluate.log",
    benchmark:
        "results/benchmarks/weightgen/{dataset}/evaluate.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo weightgen-evaluate {params.samples} {params.losses} --index {input.index:q}"
        " --data {input.data:q} --splits {input.splits:q} --data-seed {params.seed} --seed {params.seed}"
        " --settings {params.settings:q} --out {output.evaluation:q} --summary {output.metrics:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"
