"""``segzoo predict``: trained runs on new images, as ``nnUNetv2_predict -i IN -o OUT`` does.

Input: a folder of NIfTI images in any orientation and spacing, one file per channel named
``<case>_<XXXX>.nii.gz`` (nnU-Net's naming), or, for a one-channel model, any ``<case>.nii.gz``. Each case
is preprocessed exactly as the training cases were (:func:`segzoo.data.preprocess.preprocess_case` with the
run's target spacing), predicted with the sliding window, optionally with mirroring (``tta``), averaged
over the runs given (seeds, folds: an ensemble of probabilities) and mapped back to the input grid.

Output per case: ``<case>.nii.gz``, a label map painted region by region in nnU-Net's order (each region
gets a label value only it holds, later regions over earlier ones), and with ``probabilities``
``<case>_prob.nii.gz`` [X, Y, Z, R]. Inputs whose channel count does not fit the runs are refused, naming
the file, and so are images whose spacing lies far outside the training cases' (the dataset fingerprint the
runs record; ``any_spacing`` overrides); nothing is written unless every case succeeds.

Postprocessing: a run folder may hold ``postprocessing.json`` beside its checkpoint (``segzoo postprocessing``,
chosen on the run's validation cases; see :mod:`segzoo.postprocess`). A region keeps only its largest connected
component when more than half of the runs given chose it; a run without the file counts as not choosing it.
The rule is applied to each region's mask (ensembled probability > 0.5, in the input's grid) before painting;
the probability maps stay as predicted.
"""

from __future__ import annotations

import itertools
import re
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from segzoo.checkpoint import load_checkpoint
from segzoo.data.nifti import ras_spacing, save_nifti
from segzoo.data.preprocess import preprocess_case, to_original_grid
from segzoo.data.preprocessed import Preprocessed, write_plan
from segzoo.errors import SegzooError
from segzoo.infer import load_model, predict_probabilities
from segzoo.interop.nnunet_export import region_labels
from segzoo.io import output_dir
from segzoo.postprocess import apply_postprocessing, majority_postprocessing, run_postprocessing

SPACING_SLACK = 2.0  # how far beyond the training spacings an input may lie (a factor, either way)
CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii(\.gz)?$")


def find_cases(folder: Path, channels: int) -> dict[str, list[Path]]:
    """``{case: [channel files in order]}`` for the images in ``folder``."""
    files = sorted(p for p in Path(folder).iterdir() if p.name.endswith((".nii.gz", ".nii")))
    if not files:
        raise SegzooError(f"{folder}: no NIfTI images (.nii.gz or .nii)")
    named = {f: CHANNEL_FILE.match(f.name) for f in files}
    if all(named.values()):
        cases: dict[str, dict[int, Path]] = {}
        for f, m in named.items():
            cases.setdefault(m["case"], {})[int(m["channel"])] = f
        for case, found in cases.items():
            if sorted(found) != list(range(channels)):
                raise SegzooError(f"{folder / case}_*: channels {sorted(found)} found; the runs expect "
                                  f"{list(range(channels))} ({channels} file(s) per case, _0000 to "
                                  f"_{channels - 1:04d})")
        return {case: [found[c] for c in range(channels)] for case, found in sorted(cases.items())}
    if channels != 1:
        first = next(f for f, m in named.items() if not m)
        raise SegzooError(f"{first}: not named <case>_<XXXX>.nii.gz; the runs take {channels} channels, one file each")
    return {f.name.removesuffix(".gz").removesuffix(".nii"): [f] for f in files}


def check_spacing(cases: dict[str, list[Path]], spacing_range: list[list[float]] | None) -> None:
    """Refuse images whose spacing lies outside the training cases' range by more than ``SPACING_SLACK``:
    a model trained at 0.8 mm given a 5 mm image (or the reverse) is being shown another kind of data."""
    if spacing_range is None:
        return
    low, high = (np.asarray(r) for r in spacing_range)
    for files in cases.values():
        spacing = ras_spacing(nib.load(str(files[0])).affine)  # header only
        outside = (spacing < low / SPACING_SLACK) | (spacing > high * SPACING_SLACK)
        if outside.any():
            axis = int(np.argmax(outside))
            raise SegzooError(f"{files[0]}: spacing {spacing[axis]:.3g} mm along {'RAS'[axis]} is outside the "
                              f"training cases' {low[axis]:.3g}-{high[axis]:.3g} mm (x{SPACING_SLACK:g} either way): "
                              "not the data these runs were trained on; pass --any-spacing to predict it anyway")


def _runs(runs: list[str | Path], data: Preprocessed | None) -> tuple[list[Path], dict, dict]:
    """Checkpoint stems of the runs, the first one's sidecar, and its preprocessing (target spacing, labels)."""
    stems = [Path(r) / "best" if Path(r).is_dir() else Path(r) for r in runs]
    sidecars = [load_checkpoint(stem)[1] for stem in stems]
    first = sidecars[0]
    for stem, sidecar in zip(stems[1:], sidecars[1:]):
        if sidecar["channels"] != first["channels"] or sidecar["regions"] != first["regions"]:
            raise SegzooError(f"{stem}: channels/regions differ from {stems[0]}'s; an ensemble needs one dataset")
    preprocessing = first.get("preprocessing")
    if preprocessing is None:
        if data is None:
            raise SegzooError(f"{stems[0]}: records no preprocessing (trained before segzoo predict); pass --data "
                              "with the preprocessed folder it was trained on")
        preprocessing = {"target_spacing": data.spacing, "label_values": data.label_values,
                         "normalization": data.normalization, "spacing_range": data.spacing_range}
    return stems, first, preprocessing


@torch.no_grad()
def predict_folder(images: Path, out: Path, runs: list[str | Path], *, data: Preprocessed | None = None,
                   device: str = "cpu", tta: bool = False, probabilities: bool = False,
                   sw_batch_size: int = 4, overlap: float = 0.5, any_spacing: bool = False) -> list[str]:
    stems, sidecar, preprocessing = _runs(runs, data)
    dev = torch.device(device)
    models = [load_model(stem, dev)[0] for stem in stems]
    regions = sidecar["regions"]
    _, paint = region_labels(regions) if len(regions) > 1 else (None, [1])
    decision = majority_postprocessing([run_postprocessing(stem, list(regions)) for stem in stems], list(regions))
    cases = find_cases(images, len(sidecar["channels"]))
    if not any_spacing:
        check_spacing(cases, preprocessing.get("spacing_range"))
    flips = [()] + [tuple(c) for n in range(1, 4) for c in itertools.combinations(range(1, 4), n)] if tta else [()]
    with output_dir(out) as tmp, tempfile.TemporaryDirectory() as work:
        work = Path(work)
        write_plan(work, {"dataset": "predict", "channels": sidecar["channels"], "regions": regions,
                          "label_values": preprocessing["label_values"],
                          "target_spacing": preprocessing["target_spacing"], "cases": []})
        pre = Preprocessed(work)
        for case, files in cases.items():
            props = preprocess_case(tuple(files), None, preprocessing["target_spacing"],
                                    n_channels=len(sidecar["channels"]), label_values=preprocessing["label_values"],
                                    out_dir=work, case_id=case, normalization=preprocessing.get("normalization"))
            image = pre.image(case)
            prob = np.zeros((len(regions), *image.shape[1:]), dtype=np.float32)
            for model in models:
                for axes in flips:
                    flipped = np.flip(image, axes) if axes else image
                    p = predict_probabilities(model, flipped, sidecar["patch_size"], dev, sw_batch_size, overlap)
                    prob += np.flip(p, axes) if axes else p
            prob = (prob / (len(models) * len(flips))).astype(np.float32)
            prob = np.clip(to_original_grid(prob, props, mode="bilinear"), 0.0, 1.0).astype(np.float32)
            label = np.zeros(prob.shape[1:], dtype=np.uint8)
            for r, (region, value) in enumerate(zip(regions, paint)):
                label[apply_postprocessing(prob[r] > 0.5, region, decision)] = value
            affine = np.asarray(props["original"]["affine"])  # the input's, as preprocess_case read it
            save_nifti(label, affine, tmp / f"{case}.nii.gz")
            if probabilities:
                save_nifti(np.moveaxis(prob, 0, -1), affine, tmp / f"{case}_prob.nii.gz")
    return list(cases)
