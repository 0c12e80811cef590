"""What the verbs share: their help pages, argument types, the JSON settings the rules pass, the device, the
preprocessed folder."""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

from segzoo.errors import SegzooError


DEVICE_HELP = "where to compute: cuda (a GPU from the pool), cpu, or auto (cuda when a GPU is visible, else cpu)"
DEVICE_CHOICES = ("auto", "cpu", "cuda")
SETTINGS_HELP = ("JSON: the part of the pipeline configuration this verb reads, as the workflow's rule passes it "
                 "(`snakemake -n -p <target>` prints the exact command)")
TRACKING_HELP = ('experiment tracking beside dvclive (segzoo[tracking] extra): {"wandb": "off|offline|online", '
                 '"mlflow": "off|local|<URI>", "dir": "results/tracking"}')


class HelpFormatter(argparse.HelpFormatter):
    """A verb's description and epilog as paragraphs separated by blank lines: prose is wrapped to the terminal, a
    block whose later lines are indented (an example, a list of files) is printed as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        blocks = []
        for block in text.strip().split("\n\n"):
            lines = block.splitlines()
            if any(line.startswith(" ") for line in lines[1:]) or block.startswith(" "):
                blocks.append("\n".join(indent + line for line in lines))
            else:
                blocks.append(textwrap.fill(" ".join(block.split()), width, initial_indent=indent,
                                            subsequent_indent=indent))
        return "\n\n".join(blocks)


def add_verb(verbs, name: str, summary: str, description: str, example: str,
             epilog: str | None = None) -> argparse.ArgumentParser:
    """A verb's parser. ``segzoo -h`` lists it with ``summary``; ``segzoo <name> -h`` shows the summary, the
    ``description`` paragraph(s) and one ``example`` command line (tests/test_cli_help.py parses every example),
    then the options and ``epilog``."""
    text = f"{summary[0].upper()}{summary[1:]}.\n\n{description}\n\nexample:\n  {_continued(example)}"
    return verbs.add_parser(name, help=summary, description=text, epilog=epilog, formatter_class=HelpFormatter)


def _continued(command: str, width: int = 76) -> str:
    """A long command line broken before its options into shell continuation lines."""
    lines = [""]
    for part in re.split(r" (?=-)", command):
        if lines[-1] and len(lines[-1]) + 1 + len(part) > width:
            lines[-1] += " \\"
            lines.append("      " + part)
        else:
            lines[-1] = f"{lines[-1]} {part}" if lines[-1] else part
    return "\n".join(lines)


def files_list(title: str, files: dict[str, str], width: int = 78) -> str:
    """An epilog block listing output files, each name on its own line and its description wrapped under it (kept
    as written by :class:`HelpFormatter`, so it reads in an 80-column terminal)."""
    entries = [f"  {name}\n" + textwrap.fill(text, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
               for name, text in files.items()]
    return f"{title}:\n" + "\n".join(entries)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help=f"{DEVICE_HELP} (default: auto)")


def preprocessed(folder: Path):
    from segzoo.data.preprocessed import Preprocessed

    return Preprocessed(folder)


def claim_device(requested: str) -> str:
    """Resolve ``auto``; for CUDA take a GPU from the pool before torch initialises CUDA."""
    from segzoo.devices import acquire, resolve_device

    device = resolve_device(requested)
    if device == "cuda":
        lease = acquire()
        print(f"using GPU CUDA_VISIBLE_DEVICES={lease.devices}", file=sys.stderr)
    return device


def json_settings(text: str, *keys: str) -> dict:
    import json

    try:
        settings = json.loads(text)
        for key in keys:
            settings[key]
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise SegzooError(f"--settings: not a JSON object with {', '.join(map(repr, keys))} ({e})") from None
    return settings


def positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value
