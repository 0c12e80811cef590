# Inference on the test cases, per-case scores, and the comparison tables.


rule infer:
    output:
        directory(PREDICTIONS),
    input:
        checkpoint=get_checkpoint,
        postprocessing=get_postprocessing,
        raw=raw_dataset,
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        code=verb_code("infer"),
    params:
        device=DEVICE,
        sw_batch_size=config["train"]["sw_batch_size"],
        postprocessing=postprocessing_option,
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
        " --raw {input.raw:q} {params.postprocessing} --out {output:q} --device {params.device}"
        " --sw-batch-size {params.sw_batch_size} > {log:q} 2>&1"


# Scores of one row: its test predictions, or an external row's label maps (compare.external).
rule evaluate:
    output:
        SCORES,
    input:
        predictions=get_predictions,
        raw=raw_dataset,
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        code=verb_code("evaluate"),
    params:
        predictions=predictions_folder,
        tolerance=config["evaluate"]["tolerance_mm"],
        lesions=lesion_options(),
    log:
        "results/logs/evaluate/{dataset}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{model}/seed{seed}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo evaluate --predictions {params.predictions:q} --raw {input.raw:q} --data {input.data:q}"
        " --splits {input.splits:q} --model {wildcards.model} --seed {wildcards.seed}"
        " --tolerance-mm {params.tolerance} {params.lesions} --out {output:q} > {log:q} 2>&1"


# Cross-validation (splits.folds > 1): every training case predicted by the run of the fold that held it out,
# scored and compared like the test set (n = every non-test case).
rule infer_oof:
    output:
        directory(OOF_PREDICTIONS),
    input:
        runs=oof_runs,
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        code=verb_code("infer-oof"),
    params:
        runs=lambda w, input: " ".join(shlex.quote(os.path.dirname(r)) for r in input.runs),
        device=DEVICE,
        sw_batch_size=config["train"]["sw_batch_size"],
    wildcard_constraints:
        model=TRAINED_MODEL_WILDCARD,
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/infer_oof/{dataset}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/infer_oof/{dataset}/{model}/seed{seed}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo infer-oof --runs {params.runs} --data {input.data:q} --splits {input.splits:q} --out {output:q}"
        " --device {params.device} --sw-batch-size {params.sw_batch_size} > {log:q} 2>&1"


rule evaluate_oof:
    output:
        OOF_SCORES,
    input:
        predictions=rules.infer_oof.output[0],
        raw=raw_dataset,
        data=rules.preprocess.output[0],
        splits=rules.splits.output[0],
        code=verb_code("evaluate"),
    params:
        tolerance=config["evaluate"]["tolerance_mm"],
        lesions=lesion_options(),
    log:
        "results/logs/evaluate_oof/{dataset}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate_oof/{dataset}/{model}/seed{seed}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo evaluate --predictions {input.predictions:q} --raw {input.raw:q} --data {input.data:q}"
        " --splits {input.splits:q} --model {wildcards.model} --seed {wildcards.seed} --out-of-fold"
        " --tolerance-mm {params.tolerance} {params.lesions} --out {output:q} > {log:q} 2>&1"


rule compare_oof:
    output:
        tables=directory(OOF_TABLES),
        metrics=f"{METRICS}/comparison_oof.json",
    input:
        scores=run_outputs(OOF_SCORES, trained_only=True),
        plans=rules.plan.output[0],
        code=verb_code("compare"),
    params:
        metrics=" ".join(config["evaluate"]["metrics"]),
        seed=config["seed"],
        baseline=config["compare"]["baseline"],
    log:
        "results/logs/compare_oof/{dataset}.log",
    benchmark:
        "results/benchmarks/compare_oof/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo compare {input.scores:q} --out-dir {output.tables:q} --summary {output.metrics:q}"
        " --plans {input.plans:q} --metrics {params.metrics} --seed {params.seed} --baseline {params.baseline:q}"
        " > {log:q} 2>&1"


rule compare:
    output:
        tables=report(
            directory(TABLES),
            patterns=["{name}.html"],
            caption="report/tables.rst",
            category="Tables",
        ),
        metrics=f"{METRICS}/comparison.json",
    input:
        scores=run_outputs(SCORES, scored=True),
        plans=rules.plan.output[0],
        code=verb_code("compare"),
    params:
        metrics=" ".join(config["evaluate"]["metrics"]),
        seed=config["seed"],
        rows=compare_options(),
    log:
        "results/logs/compare/{dataset}.log",
    benchmark:
        "results/benchmarks/compare/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo compare {input.scores:q} --out-dir {output.tables:q} --summary {output.metrics:q}"
        " --plans {input.plans:q} --metrics {params.metrics} --seed {params.seed} {params.rows} > {log:q} 2>&1"


rule predict:
    output:
        directory(NEW_PREDICTIONS),
    input:
        images=predict_images,
        runs=model_runs,
        postprocessing=model_postprocessing,  # found by predict beside each run's checkpoint
        code=verb_code("predict"),
    params:
        input=config["predict"]["input"],
        runs=lambda w, input: " ".join(shlex.quote(os.path.dirname(r)) for r in input.runs),
        options=" ".join(opt for opt, on in (("--tta", config["predict"]["tta"]),
                                             ("--probabilities", config["predict"]["probabilities"])) if on),
        device=DEVICE,
    wildcard_constraints:
        model=TRAINED_MODEL_WILDCARD,
    resources:
        gpu=GPUS_PER_JOB,
    log:
        "results/logs/predict/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/predict/{dataset}/{model}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo predict -i {params.input:q} -o {output:q} --run {params.runs} {params.options}"
        " --device {params.device} > {log:q} 2>&1"
