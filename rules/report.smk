# Figures and the static results page (results/index.html); `snakemake --report results/report.zip`
# collects the same figures with the captions in rules/report/.


report: "report/workflow.rst"


rule figures:
    output:
        report(
            directory("results/figures/{dataset}"),
            patterns=["{name}.png"],
            caption="report/figures.rst",
            category="Figures",
        ),
    input:
        tables="results/tables/{dataset}",
        runs=run_outputs("results/train/{dataset}/{model}/seed{seed}/metrics.json"),
        predictions=run_outputs("results/infer/{dataset}/{model}/seed{seed}"),
        raw=raw_dataset,
        code=sources("report/*", "evaluate/metrics.py", "models/*"),
    params:
        config=json.dumps(config, sort_keys=True),
    log:
        "results/logs/figures/{dataset}.log",
    benchmark:
        "results/benchmarks/figures/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo figures --dataset {wildcards.dataset} --raw {input.raw:q} --config-json {params.config:q}"
        " --out {output:q} > {log:q} 2>&1"


rule page:
    output:
        "results/index.html",
    input:
        figures=f"results/figures/{DATASET}",
        tables=f"results/tables/{DATASET}",
        weightgen=weightgen_targets(),
        code=sources("report/page.py"),
    params:
        dataset=DATASET,
        config=json.dumps(config, sort_keys=True),
    log:
        "results/logs/page.log",
    benchmark:
        "results/benchmarks/page.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo page --dataset {params.dataset} --config-json {params.config:q} --out {output:q} > {log:q} 2>&1"
