# Figures, the static results page of each dataset (results/<dataset>/index.html) and the index of them all; `snakemake --report results/report.zip`
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
        checkpoints=run_outputs(rules.train.output.best_sidecar, trained_only=True),  # how each model was built
        predictions=run_outputs(rules.infer.output[0]),
        data=rules.preprocess.output[0],
        raw=raw_dataset,
        code=verb_code("figures"),
    params:
        runs=runs_json,
        config=json.dumps({"evaluate": {"metrics": config["evaluate"]["metrics"]}},
                          sort_keys=True),  # the keys it reads: a change elsewhere redraws nothing
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
        figures=rules.figures.output[0],
        tables=rules.compare.output.tables,
        plans=rules.plan.output[0],
        oof_tables=lambda w: [OOF_TABLES.format(dataset=w.dataset)] if FOLDS > 1 else [],
        weightgen=lambda w: [f"{WEIGHTGEN.format(dataset=w.dataset)}/evaluation"] if WG["enabled"] else [],
        code=verb_code("page"),
    params:
        weightgen=lambda w, input: f"--weightgen {shlex.quote(input.weightgen[0])}" if input.weightgen else "",
        oof=lambda w, input: f"--oof-tables {shlex.quote(input.oof_tables[0])}" if input.oof_tables else "",
        config=json.dumps(RESULT_CONFIG, sort_keys=True),
    log:
        "results/logs/page/{dataset}.log",
    benchmark:
        "results/benchmarks/page/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo page --dataset {wildcards.dataset} --figures {input.figures:q} --tables {input.tables:q}"
        " --plans {input.plans:q} {params.oof} {params.weightgen} --config-json {params.config:q} --out {output:q} > {log:q} 2>&1"


rule paper:
    output:
        directory(PAPER),
    input:
        tables=rules.compare.output.tables,
        figures=rules.figures.output[0],
        plans=rules.plan.output[0],
        weightgen=lambda w: [f"{WEIGHTGEN.format(dataset=w.dataset)}/evaluation"] if WG["enabled"] else [],
        references=PAPER_REFERENCES,
        code=verb_code("paper"),
    params:
        weightgen=lambda w, input: f"--weightgen {shlex.quote(input.weightgen[0])}" if input.weightgen else "",
        config=json.dumps(RESULT_CONFIG, sort_keys=True),
    log:
        "results/logs/paper/{dataset}.log",
    benchmark:
        "results/benchmarks/paper/{dataset}.tsv"
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo paper --dataset {wildcards.dataset} --tables {input.tables:q} --figures {input.figures:q}"
        " --plans {input.plans:q} {params.weightgen} --config-json {params.config:q} --out {output:q} > {log:q} 2>&1"


rule site_index:
    output:
        SITE_INDEX,
    input:
        pages=expand(PAGE, dataset=DATASET),
        code=verb_code("site-index"),
    log:
        "results/logs/site_index.log",
    conda:
        "../envs/segzoo.yaml"
    shell:
        "segzoo site-index --results results --out {output:q} > {log:q} 2>&1"
