# Figures and the static results page (results/index.html); `snakemake --report results/report.zip`
# collects the same figures with the captions in rules/report/. Both verbs get every path from here.


report: "report/workflow.rst"


rule figures:
    output:
        report(
            directory(FIGURES),
            patterns=["{name}.png"],
            caption="report/figures.rst",
            category="Figures",
        ),
    input:
        tables=rules.compare.output.tables,
        runs=run_outputs(rules.train.output.metrics, trained_only=True),
        predictions=run_outputs(rules.infer.output[0]),
        data=rules.preprocess.output[0],
        raw=raw_dataset,
        code=sources("report/*", "evaluate/metrics.py", "models/*", "data/preprocessed.py"),
    params:
        runs=runs_json,
        config=json.dumps(config, sort_keys=True),
    log:
        "results/logs/figures/{dataset}.log",
    benchmark:
        "results/benchmarks/figures/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo figures --tables {input.tables:q} --data {input.data:q} --raw {input.raw:q} --runs {params.runs:q}"
        " --config-json {params.config:q} --out {output:q} > {log:q} 2>&1"


rule page:
    output:
        PAGE,
    input:
        figures=expand(rules.figures.output[0], dataset=DATASET),
        tables=expand(rules.compare.output.tables, dataset=DATASET),
        weightgen=weightgen_targets(),
        code=sources("report/page.py"),
    params:
        dataset=DATASET,
        weightgen=lambda w, input: f"--weightgen {shlex.quote(input.weightgen[0])}" if input.weightgen else "",
        config=json.dumps(config, sort_keys=True),
    log:
        "results/logs/page.log",
    benchmark:
        "results/benchmarks/page.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo page --dataset {params.dataset} --figures {input.figures:q} --tables {input.tables:q}"
        " {params.weightgen} --config-json {params.config:q} --out {output:q} > {log:q} 2>&1"
