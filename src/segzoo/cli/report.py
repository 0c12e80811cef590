"""The `segzoo` verbs of the report: figures, a dataset's page, the index of pages."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.common import add_verb, preprocessed
from segzoo.errors import SegzooError


def _figures(args: argparse.Namespace) -> None:
    import json

    from segzoo.report.figures import write_figures

    try:
        runs = json.loads(args.runs)
    except json.JSONDecodeError as e:
        raise SegzooError(f"--runs: not JSON ({e})") from None
    figures = write_figures(args.tables, preprocessed(args.data), args.raw, runs=runs,
                            config=json.loads(args.config_json), out=args.out)
    print(f"wrote {len(figures)} figures to {args.out}")


def _page(args: argparse.Namespace) -> None:
    import json

    from segzoo.report.page import write_page

    out = write_page(args.dataset, figures_dir=args.figures, tables=args.tables, weightgen=args.weightgen,
                     config=json.loads(args.config_json), out=args.out, repo=Path.cwd(), plans=args.plans,
                     oof_tables=args.oof_tables)
    print(f"report page: {out.resolve()}")


def _paper(args: argparse.Namespace) -> None:
    import json

    from segzoo.report.paper import write_paper

    pdf = write_paper(args.dataset, tables=args.tables, figures_dir=args.figures, plans=args.plans,
                      config=json.loads(args.config_json), out=args.out, weightgen=args.weightgen,
                      compile_pdf=not args.no_pdf)
    print(f"paper folder: {args.out}" + (f"; compiled {pdf}" if pdf else ""))


def _site_index(args: argparse.Namespace) -> None:
    from segzoo.report.site_index import write_site_index

    pages = write_site_index(args.results, args.out)
    print(f"{args.out}: {len(pages)} dataset page(s): " + ", ".join(p.parent.name for p in pages))


def register(verbs) -> None:
    p = add_verb(verbs, "figures", "every figure of the report for one dataset",
                 "Drawn from the comparison tables, the runs' training curves and predictions and the raw images: "
                 "score distributions, training curves, example slices with each model's masks, architecture "
                 "diagrams. The workflow's figures rule passes --runs and --config-json.",
                 "segzoo figures --tables results/tables/D --data results/preprocessed/D --raw results/raw/D "
                 "--runs '[...]' --config-json '{...}' --out results/figures/D")
    p.add_argument("--tables", type=Path, required=True, help="the comparison tables folder (segzoo compare)")
    p.add_argument("--data", type=Path, required=True, help="preprocessed dataset folder")
    p.add_argument("--raw", type=Path, required=True, help="raw dataset (images and reference labels)")
    p.add_argument("--runs", required=True,
                   help='JSON list of {"model", "seed", "run": training folder, "predictions": infer folder}')
    p.add_argument("--config-json", required=True, help="the resolved pipeline configuration as JSON")
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.set_defaults(run=_figures)

    p = add_verb(verbs, "page", "write a dataset's static results page (index.html)",
                 "One self-contained page per dataset: the plan, the comparison tables, the figures, the "
                 "cross-validation tables and the G.pt evaluation when those stages ran, and the configuration "
                 "and code version that made them.",
                 "segzoo page --dataset D --figures results/figures/D --tables results/tables/D "
                 "--config-json '{...}' --out results/D/index.html")
    p.add_argument("--dataset", required=True, help="the dataset's name (the page's title)")
    p.add_argument("--figures", type=Path, required=True, help="the figures folder (segzoo figures)")
    p.add_argument("--tables", type=Path, required=True, help="the comparison tables folder (segzoo compare)")
    p.add_argument("--weightgen", type=Path, help="the G.pt evaluation folder, when that stage ran")
    p.add_argument("--config-json", required=True, help="the resolved pipeline configuration as JSON")
    p.add_argument("--out", type=Path, required=True, help="the dataset's page, e.g. results/<dataset>/index.html")
    p.add_argument("--plans", type=Path, help="plans.json (segzoo plan): shown as the page's Plan section")
    p.add_argument("--oof-tables", type=Path, help="the cross-validation (out-of-fold) comparison tables")
    p.set_defaults(run=_page)

    p = add_verb(verbs, "paper", "a dataset's paper folder: main.tex (a two-column draft), references.bib, its "
                 "figures as PDF, main.pdf",
                 "The comparison as a paper draft a lab would start from: an abstract and results written from the "
                 "statistics, Methods in prose, one main table, the figures as PDF, the checkpoint-diffusion "
                 "criteria, the other tables in an appendix, references.bib, and main.pdf where TeX (latexmk) is "
                 "installed.",
                 "segzoo paper --dataset D --tables results/tables/D --figures results/figures/D "
                 "--plans results/plans/D/plans.json --config-json '{...}' --out results/D/paper")
    p.add_argument("--dataset", required=True, help="the dataset's name")
    p.add_argument("--tables", type=Path, required=True, help="the comparison tables folder (segzoo compare)")
    p.add_argument("--figures", type=Path, required=True, help="the figures folder (segzoo figures)")
    p.add_argument("--plans", type=Path, required=True, help="plans.json (segzoo plan): the protocol and patches")
    p.add_argument("--weightgen", type=Path, help="the G.pt evaluation folder, when that stage ran")
    p.add_argument("--config-json", required=True, help="the configuration that decides the results, as JSON")
    p.add_argument("--out", type=Path, required=True, help="folder to create, e.g. results/<dataset>/paper")
    p.add_argument("--no-pdf", action="store_true", help="write the LaTeX only, even where TeX is installed")
    p.set_defaults(run=_paper)

    p = add_verb(verbs, "site-index", "write results/index.html: a link to every dataset's page",
                 "Finds every <dataset>/index.html under the results folder and links them on one page, so the "
                 "results of several datasets read as one site.",
                 "segzoo site-index --results results --out results/index.html")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="folder holding <dataset>/index.html pages (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("results/index.html"), help="page to write (default: %(default)s)")
    p.set_defaults(run=_site_index)
