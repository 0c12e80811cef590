"""The house rules a refactor must keep: one reader per format, one contract per model, no import cycles."""

import ast
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from segzoo import imports
from segzoo.data.preprocess import preprocess_dataset
from segzoo.data.preprocessed import Preprocessed
from segzoo.errors import SegzooError
from segzoo.models import registry
from segzoo.models.contract import SegmentationModel
from segzoo.models.nnunet import plain_conv_unet_architecture

from conftest import REPO

SRC = REPO / "src" / "segzoo"


def _modules_mentioning(pattern: str) -> list[str]:
    return sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if re.search(pattern, p.read_text()))


def test_only_the_preprocessed_module_knows_the_folder_layout():
    assert _modules_mentioning(r"preprocess\.json|_seg\.npy|\{case\w*\}\.npy") == ["data/preprocessed.py"]


def test_nothing_outside_train_imports_train_for_what_is_not_training():
    users = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segzoo.train"):
                users.setdefault(node.module, set()).add(str(path.relative_to(SRC)))
    allowed = {"segzoo.train.loop": {"cli/train.py", "weightgen/zoo/train.py"},  # running a training is training
               "segzoo.train.validate": {"weightgen/zoo/scoring.py"},  # a zoo network's whole-volume Dice
               "segzoo.train.loss": {"train/loop.py", "weightgen/zoo/engine.py"},  # the zoo engine trains with it
               "segzoo.train.distributed": {"train/loop.py"}}
    for module, importers in users.items():
        assert module in allowed, module
        assert importers - allowed[module] <= {p for p in importers if p.startswith("train/")}, (module, importers)


def test_every_model_keeps_the_segmentation_contract_and_one_without_it_is_refused(monkeypatch):
    for name in registry.MODELS:
        options = {registry.ZOO_NETWORK: {"features": [2, 4]},
                   registry.IMPORTED: {"architecture": plain_conv_unet_architecture([2, 4])}}.get(name, {})
        if name in registry.PLANNED and name != registry.IMPORTED:
            options = registry.planned_options(name, {"base_features": 2}, [16, 16, 16], [1.0, 1.0, 1.0])
        model = registry.build_model(name, 1, 2, **options)
        assert isinstance(model, SegmentationModel) and model.divisor >= 1
        assert model.auxiliary_loss(torch.zeros(1, 2, 8, 8, 8)) is None  # no auxiliary loss unless configured
    monkeypatch.setitem(registry.MODELS, "bare", lambda c_in, c_out: torch.nn.Conv3d(c_in, c_out, 1))
    with pytest.raises(SegzooError, match="lacks the SegmentationModel contract"):
        registry.build_model("bare", 1, 2)


def test_the_preprocessed_reader(tiny_dataset, tmp_path):
    pre = preprocess_dataset(tiny_dataset, tmp_path / "pre")
    assert isinstance(pre, Preprocessed) and pre.region_names == list(pre.regions) == ["canal", "sc", "lesion"]
    case = pre.case(pre.case_ids()[0], mmap=True)
    assert case.image.shape[0] == len(pre.channels) and case.label.shape == (1, *case.image.shape[1:])
    assert case.properties["preprocessed"]["shape"] == list(case.image.shape[1:])
    assert pre.plan_bytes == (tmp_path / "pre" / "preprocess.json").read_bytes()
    np.testing.assert_array_equal(pre.label(case.id), np.asarray(case.label))
    (tmp_path / "pre" / f"{case.id}_seg.npy").unlink()
    assert pre.case(case.id).label is None  # unlabelled
    with pytest.raises(SegzooError, match="nope.npy: missing"):
        pre.image("nope")
    with pytest.raises(SegzooError, match="preprocess.json: missing"):
        Preprocessed(tmp_path)


# The package's layers, lowest first: a module may import modules of its own layer and of the layers below it,
# never above. (Also in DESIGN.md; segzoo.imports reads the imports, inside functions included.)
LAYERS = [
    ("foundation", ["segzoo", "segzoo.errors", "segzoo.io", "segzoo.provenance", "segzoo.determinism",
                    "segzoo.devices", "segzoo.checkpoint", "segzoo.tracking", "segzoo.imports"]),
    ("models", ["segzoo.models"]),
    ("data", ["segzoo.data"]),
    ("inference", ["segzoo.inference"]),
    ("evaluate", ["segzoo.evaluate"]),
    ("train", ["segzoo.train"]),
    ("interop", ["segzoo.interop"]),
    ("weightgen", ["segzoo.weightgen"]),
    ("zoo", ["segzoo.weightgen.zoo"]),
    ("generators", ["segzoo.weightgen.gpt", "segzoo.weightgen.graph"]),
    ("instrument", ["segzoo.weightgen.evaluation"]),
    ("report", ["segzoo.report"]),
    ("verbs", ["segzoo.infer", "segzoo.predict", "segzoo.config", "segzoo.dataset_checks", "segzoo.dvc_sync",
               "segzoo.cli", "segzoo.__main__"]),
]


def layer_of(module: str) -> int:
    """The layer of the longest prefix that names ``module`` (a package names its submodules)."""
    matches = [(len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".") and prefix != "segzoo"]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each an import circle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_and_no_import_from_a_lower_layer_to_a_higher_one():
    graph = imports.graph()
    assert len(graph) > 50 and "segzoo.inference.window" in graph["segzoo.train.validate"]  # the walk sees them
    assert circles(graph) == []
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
              for m, deps in sorted(graph.items()) for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert upward == []


def test_the_walk_finds_circles_and_upward_imports_inside_functions(tmp_path):
    """The checks above can fail: a planted package with a circle hidden in a function and an upward import."""
    root = tmp_path / "segzoo"
    (root / "data").mkdir(parents=True)
    (root / "report").mkdir()
    for name in ("__init__.py", "data/__init__.py", "report/__init__.py"):
        (root / name).write_text("")
    (root / "data" / "a.py").write_text("def f():\n    from segzoo.report import b\n")
    (root / "report" / "b.py").write_text("from segzoo.data.a import f\n")
    graph = imports.graph(root)
    assert circles(graph) == [["segzoo.data.a", "segzoo.report.b"]]
    assert layer_of("segzoo.report.b") > layer_of("segzoo.data.a")


def test_the_package_imports():
    """What the static walk cannot see (a name missing at import time): the verbs' heaviest modules import."""
    modules = ("segzoo.cli", "segzoo.weightgen.evaluation.evaluate", "segzoo.weightgen.graph.sample",
               "segzoo.report.page", "segzoo.report.paper", "segzoo.infer",
               "segzoo.predict")
    result = subprocess.run([sys.executable, "-c", "; ".join(f"import {m}" for m in modules)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
