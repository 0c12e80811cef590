"""The `segzoo` verbs of the workflow itself: dvc.yaml from the Snakemake DAG."""

from __future__ import annotations

import argparse
from pathlib import Path

from segzoo.cli.common import add_verb
from segzoo.errors import SegzooError


def _dvc_sync(args: argparse.Namespace) -> None:
    from segzoo.dvc_sync import write_dvc_yaml

    root = Path.cwd()
    changed = write_dvc_yaml(root, args.configfile, args.gpus, check=args.check)
    if args.check and changed:
        raise SegzooError(f"{root / 'dvc.yaml'}: stale; it differs from what the Snakemake DAG gives "
                          f"(run `segzoo dvc-sync` and commit the result)")
    print(f"dvc.yaml {'is up to date' if not changed else 'written'}")


def register(verbs) -> None:
    p = add_verb(verbs, "dvc-sync", "write dvc.yaml from the Snakemake DAG (run in the repository root)",
                 "Snakemake stays the one definition of the pipeline: each coarse DVC stage runs snakemake on its "
                 "targets, and dvc.yaml lists the inputs (the code included), config keys and outputs of its jobs, "
                 "read from the DAG, so dvc repro and dvc status follow the workflow. --check writes nothing and "
                 "fails when dvc.yaml is stale.",
                 "segzoo dvc-sync --check")
    p.add_argument("--configfile", type=Path, action="append", default=[],
                   help="as for snakemake: a config file laid over config.yaml (repeatable), e.g. presets/ci.yaml")
    p.add_argument("--gpus", type=int, default=2, help="the stages run snakemake with --resources gpu=N "
                   "(default: %(default)s)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if dvc.yaml is stale")
    p.set_defaults(run=_dvc_sync)
