"""The architecture diagrams: traced from the model objects, written as SVG, PNG and PDF by Graphviz's `dot`."""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from segzoo.errors import SegzooError
from segzoo.models.registry import build_model, planned_options
from segzoo.report.architecture import architecture_diagram, fit_size, wiring
from segzoo.report.figures import write_figures

SVG = "{http://www.w3.org/2000/svg}"
XLINK_TITLE = "{http://www.w3.org/1999/xlink}title"
SIZE = (16, 16, 16)
# Small widths keep the trace quick; the depths are the ones that matter for the wiring.
OPTIONS = {"unet3plus": {"base": 4, "levels": 5}, "ms_unet3plus": {"base": 4, "levels": 5},
           "diffnet": {"channels": 4, "layers": 6, "hidden": 4},
           "ms_diffnet": {"channels": 4, "layers": 3, "hidden": 4, "scales": 3}}


def _need_dot():
    if shutil.which("dot") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Graphviz's dot is not installed (.ci/run installs it with apt)")
        pytest.skip("Graphviz's dot is not installed here (apt-get install graphviz); CI installs it and runs this")


@pytest.fixture(scope="module")
def diagrams(tmp_path_factory) -> dict[str, dict[str, Path]]:
    _need_dot()
    out = tmp_path_factory.mktemp("architecture")
    return {name: architecture_diagram(name, options, 1, 3, out / f"architecture_{name}", size=SIZE)
            for name, options in OPTIONS.items()}


def _svg(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The SVG's texts and its wires as (from, to) box titles (each wire's tooltip keeps its real direction)."""
    root = ET.parse(path).getroot()  # valid XML, or this raises
    texts = [t.text for t in root.iter(f"{SVG}text") if t.text]
    wires = []
    for g in root.iter(f"{SVG}g"):
        if "wire" in g.get("class", "").split():
            title = next(a.get(XLINK_TITLE) for a in g.iter(f"{SVG}a") if a.get(XLINK_TITLE))
            source, target = title.split(" → ")
            wires.append((source, target))
    return texts, wires


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_diagram_is_written_in_three_formats(diagrams, name):
    files = diagrams[name]
    assert sorted(files) == ["pdf", "png", "svg"]
    assert all(p.name == f"architecture_{name}.{fmt}" for fmt, p in files.items())
    assert files["pdf"].read_bytes().startswith(b"%PDF")
    height, width = mpimg.imread(files["png"]).shape[:2]
    assert height > 150 and width > 500
    texts, wires = _svg(files["svg"])
    assert wires and any(name in t for t in texts)  # the title names the model


@pytest.mark.parametrize("name", ["unet3plus", "ms_unet3plus"])
def test_unet3plus_every_decoder_stage_is_fed_from_every_scale(diagrams, name):
    levels = OPTIONS[name]["levels"]
    texts, wires = _svg(diagrams[name]["svg"])
    into = Counter(target for _, target in wires)
    for i in range(levels - 1):
        assert f"fuse[{i}]" in texts
        assert into[f"fuse[{i}]"] >= levels, (i, into)  # full-scale skips: one wire per encoder scale
        sources = {s for s, t in wires if t == f"fuse[{i}]"}
        # the finer encoder maps and the same-level one, the coarser decoder stages and the bottleneck
        assert sources == {f"encoders[{j}]" for j in range(i + 1)} | {f"fuse[{j}]" for j in range(i + 1, levels - 1)} \
            | {f"encoders[{levels - 1}]"}, sources
    for k in range(levels):
        assert f"encoders[{k}]" in texts and f"heads[{k}]" in texts  # deep supervision: one head per stage
    pyramid = {t for s, t in wires if s == "image_pyramid"}
    if name == "ms_unet3plus":  # the image pyramid feeds encoder levels 1 .. L-2
        assert pyramid == {f"encoders[{k}]" for k in range(1, levels - 1)}
    else:
        assert not pyramid and "image_pyramid" not in texts


def test_diffnet_diffusion_layers_are_one_repeated_block(diagrams):
    texts, wires = _svg(diagrams["diffnet"]["svg"])
    assert sum("DiffusionLayer" in t for t in texts) == 1
    assert "DiffusionLayer × 6" in texts and "layers[0…5]" in texts
    assert ("layers[0…5]", "layers[0…5]") in wires  # the loop, labelled with the count
    assert "× 6" in texts
    assert {s for s, t in wires if t == "layers[0…5]"} == {"input", "lift", "layers[0…5]"}


def test_ms_diffnet_runs_coarse_to_fine_on_the_image_pyramid(diagrams):
    texts, wires = _svg(diagrams["ms_diffnet"]["svg"])
    assert "image_pyramid" in texts
    assert sum("DiffusionLayer × 3" == t for t in texts) == 3  # one repeated block per scale
    for s in range(3):
        assert ("image_pyramid", f"lifts[{s}]") in wires and ("image_pyramid", f"stages[{s}][0…2]") in wires
    assert ("stages[2][0…2]", "lifts[1]") in wires and ("stages[1][0…2]", "lifts[0]") in wires  # upsampled state


def test_wiring_covers_every_parameter_and_needs_no_dot():
    for name, options in OPTIONS.items():
        model = build_model(name, 1, 3, **options)
        boxes, _ = wiring(model, (1, 1, *fit_size(model, SIZE)))
        folded = sum(p.numel() for p in model.parameters()) - sum(b.parameters for b in boxes)
        # what is not in a box sits on a wire: U-Net 3+'s per-branch convolutions, nothing else
        branches = sum(p.numel() for p in model.branches.parameters()) if hasattr(model, "branches") else 0
        assert folded == branches, name


def test_nnunet_diagrams_show_stages_skips_and_heads():
    for name in ("nnunet", "nnunet_resenc"):
        options = planned_options(name, {"base_features": 4, "max_features": 16}, [16, 16, 16], [1.0, 1.0, 3.0])
        model = build_model(name, 1, 3, **options)
        boxes, wires = wiring(model, (1, 1, 16, 16, 16))
        title = {b.id: b.title for b in boxes}
        stages = options["architecture"]["arch_kwargs"]["n_stages"]
        assert {f"encoder.stages[{i}]" for i in range(stages)} <= set(title.values()), name
        heads = [b for b in boxes if b.title.startswith("decoder.seg_layers")]
        assert len(heads) == stages - 1 and sorted(o for b in heads for o in b.outputs) == list(range(stages - 1))
        decoders = [b for b in boxes if b.title.startswith("decoder.stages")]
        assert len(decoders) == stages - 1 and all(b.joins == 2 for b in decoders)  # skip + transposed conv
        into = {(title[w.source], title[w.target]) for w in wires}
        assert ("encoder.stages[0]", f"decoder.stages[{stages - 2}]") in into  # the finest skip
        bottleneck = f"encoder.stages[{stages - 1}]"
        assert any(title[w.source] == bottleneck and w.steps == ["decoder.transpconvs[0]"] for w in wires)
        folded = sum(p.numel() for p in model.parameters()) - sum(b.parameters for b in boxes)
        assert folded == sum(p.numel() for p in model.decoder.transpconvs.parameters())  # on the wires


def test_missing_dot_is_one_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SegzooError) as e:
        architecture_diagram("diffnet", {}, 1, 3, tmp_path / "out" / "architecture_diffnet", size=SIZE)
    assert e.value.problems == [str(e.value)] and "\n" not in str(e.value)
    assert "dot" in str(e.value) and "apt-get install graphviz" in str(e.value)
    assert not (tmp_path / "out").exists()
    # `segzoo figures` says so before reading anything, and leaves no folder behind
    with pytest.raises(SegzooError, match="apt-get install graphviz"):
        write_figures(tmp_path / "no-tables", None, tmp_path / "no-raw",
                      runs=[{"model": "diffnet", "run": str(tmp_path / "no-run")}], config={}, out=tmp_path / "figures")
    assert not (tmp_path / "figures").exists()
