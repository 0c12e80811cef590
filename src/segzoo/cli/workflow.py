"""The `segzoo` verbs of the workflow itself: dvc.yaml from the Snakemake DAG."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    p = verbs.add_parser("dvc-sync", help="write dvc.yaml from the Snakemake DAG (run in the repository root)")
    p.add_argument("--configfile", type=Path, action="append", default=[],
                   help="as for snakemake: a config file laid over config.yaml (repeatable), e.g. presets/ci.yaml")
    p.add_argument("--gpus", type=int, default=2, help="the stages run snakemake with --resources gpu=N")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if dvc.yaml is stale")
    p.set_defaults(run=_dvc_sync)
