# Data stage: phantom (or the user's dataset) -> verify -> fingerprint -> plan; fingerprint -> preprocess -> splits.


rule phantom:
    output:
        directory(PHANTOM),
    input:
        code=verb_code("phantom"),
    params:
        cases=config["phantom"]["cases"],
        test_cases=config["phantom"]["test_cases"],
        seed=config["seed"],
        shape=" ".join(map(str, config["phantom"]["shape"])),
        spacing=" ".join(map(str, config["phantom"]["spacing"])),
        jitter=config["phantom"]["spacing_jitter"],
        rotation=config["phantom"]["max_rotation_deg"],
        lesion_free=config["phantom"]["lesion_free_fraction"],
        max_lesions=config["phantom"]["max_lesions"],
        noise=config["phantom"]["noise"],
        bias=config["phantom"]["bias"],
    log:
        "results/logs/phantom/{dataset}.log",
    benchmark:
        "results/benchmarks/phantom/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo phantom --out {output:q} --cases {params.cases} --test-cases {params.test_cases} --seed {params.seed}"
        " --shape {params.shape}"
        " --spacing {params.spacing} --spacing-jitter {params.jitter} --max-rotation {params.rotation}"
        " --lesion-free-fraction {params.lesion_free} --max-lesions {params.max_lesions}"
        " --noise {params.noise} --bias {params.bias} > {log:q} 2>&1"


rule verify:
    output:
        VERIFY_REPORT,
    input:
        raw=raw_dataset,
        code=verb_code("verify"),
    log:
        "results/logs/verify/{dataset}.log",
    benchmark:
        "results/benchmarks/verify/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo verify {input.raw:q} --report {output:q} > {log:q} 2>&1"


rule fingerprint:
    output:
        FINGERPRINT,
    input:
        raw=raw_dataset,
        report=rules.verify.output[0],
        code=verb_code("fingerprint"),
    params:
        seed=config["seed"],
    log:
        "results/logs/fingerprint/{dataset}.log",
    benchmark:
        "results/benchmarks/fingerprint/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo fingerprint {input.raw:q} --out {output:q} --seed {params.seed} > {log:q} 2>&1"


rule plan:
    output:
        PLANS,
    input:
        fingerprint=rules.fingerprint.output[0],
        code=verb_code("plan"),
    params:
        settings=plan_settings(),
    log:
        "results/logs/plan/{dataset}.log",
    benchmark:
        "results/benchmarks/plan/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo plan --fingerprint {input.fingerprint:q} --out {output:q} --settings {params.settings:q} > {log:q} 2>&1"


rule preprocess:
    output:
        directory(PREPROCESSED),
    input:
        raw=raw_dataset,
        fingerprint=rules.fingerprint.output[0],
        code=verb_code("preprocess"),
    params:
        options=preprocess_options(),
    log:
        "results/logs/preprocess/{dataset}.log",
    benchmark:
        "results/benchmarks/preprocess/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo preprocess {input.raw:q} --out {output:q} --fingerprint {input.fingerprint:q} {params.options}"
        " > {log:q} 2>&1"


rule splits:
    output:
        SPLITS,
    input:
        data=rules.preprocess.output[0],
        nnunet_splits=[config["splits"]["nnunet_splits"]] if config["splits"]["nnunet_splits"] else [],
        code=verb_code("splits"),
    params:
        seed=config["seed"],
        val=config["splits"]["val_fraction"],
        test=config["splits"]["test_fraction"],
        folds=splits_options(),
    log:
        "results/logs/splits/{dataset}.log",
    benchmark:
        "results/benchmarks/splits/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo splits {input.data:q} --out {output:q} --seed {params.seed}"
        " --val-fraction {params.val} --test-fraction {params.test} {params.folds} > {log:q} 2>&1"
