"""The `segzoo` command: one verb per pipeline step, called by Snakemake rules, DVC stages and people.

Each stage's verbs are declared beside their handlers, in one module per stage (``data``, ``train``,
``evaluate``, ``report``, ``weightgen``, ``interop``, ``workflow``); this module assembles them. torch and MONAI
are imported only inside the handlers that use them, so light verbs start fast, and a verb's code is what its
handler imports (``segzoo.imports``: the workflow reruns a rule when that code changes).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from segzoo.cli import data, evaluate, interop, report, train, weightgen, workflow
from segzoo.errors import SegzooError

STAGES = (data, train, evaluate, report, weightgen, interop, workflow)


def build_parser() -> argparse.ArgumentParser:
    return _parser()[0]


def _parser() -> tuple[argparse.ArgumentParser, argparse.Action]:
    parser = argparse.ArgumentParser(prog="segzoo", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for stage in STAGES:
        stage.register(verbs)
    return parser, verbs


def handler(verb: str) -> Callable[[argparse.Namespace], None]:
    """The function that runs ``segzoo <verb>``."""
    choices = _verbs()
    if verb not in choices:
        raise SegzooError(f"segzoo has no verb {verb!r} (it has {', '.join(choices)})")
    return choices[verb].get_default("run")


@functools.lru_cache(maxsize=1)
def _verbs() -> dict[str, argparse.ArgumentParser]:
    return dict(_parser()[1].choices)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except SegzooError as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
