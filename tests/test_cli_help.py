"""Every verb's help reads like `nnUNetv2_predict -h`: a description, one example command that parses, help on every
option; `segzoo predict -h` also says what each output file holds and how mirroring defaults (issue 35)."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

import pytest

from segzoo.cli import _verbs, build_parser, handler

VERBS = sorted(_verbs())


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_a_description_an_example_that_parses_and_help_on_every_option(verb):
    parser = _verbs()[verb]
    head, example = parser.description.split("\n\nexample:\n  ")
    assert len(head.split()) >= 15, head  # a paragraph, not only the one-line summary
    argv = shlex.split(example.replace("\\\n", " "))
    assert argv[:2] == ["segzoo", verb], argv
    assert build_parser().parse_args(argv[1:]).run is handler(verb)  # the example is a command segzoo accepts
    silent = [a.option_strings or a.dest for a in parser._actions
              if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not silent, f"{verb}: no help for {silent}"


def test_predict_help_describes_the_outputs_and_the_mirroring_defaults():
    result = subprocess.run([sys.executable, "-m", "segzoo", "predict", "--help"], capture_output=True, text=True,
                            env={"COLUMNS": "120", "PATH": ""})
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for said in ("<case>.nii.gz uint8 label map", "<case>_prob.nii.gz with --probabilities: float32 [X, Y, Z, K]",
                 "--no-tta, --disable_tta", "Default: on for imports, off for segzoo runs",
                 "example: segzoo predict -i", "refused for imports"):
        assert said in text, said
    parse = build_parser().parse_args
    base = ["predict", "-i", "in", "-o", "out", "--run", "r"]
    assert [parse(base + extra).tta for extra in ([], ["--tta"], ["--no-tta"], ["--disable_tta"])] == \
        [None, True, False, False]
    assert parse(base).sw_batch_size is None and parse(base).data is None  # given or not is known: imports refuse
    with pytest.raises(SystemExit):
        parse(base + ["--tta", "--disable_tta"])
