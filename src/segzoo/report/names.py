"""The names people read: every model, metric, region and library that the page, the figures and the paper show,
looked up here and nowhere else (identifiers such as ``ms_unet3plus`` stay in files, configs and commands).

Adding a model to the registry (:data:`segzoo.models.registry.MODELS`) is one line in :data:`MODELS` below: its
name, the work it implements (a key of ``references.bib`` beside this module) and one sentence for the paper's
methods; ``tests/test_paper.py`` fails for a registry model without one. Metric names are
:data:`segzoo.evaluate.metrics.METRICS`' own (that list is the one place a metric is declared); a metric's
implementation, as the page and the paper state it, is :func:`implementation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segzoo.evaluate.metrics import DEFINITIONS, METRICS

REFERENCES = Path(__file__).with_name("references.bib")  # the paper's bibliography; keys below are its entries


@dataclass(frozen=True)
class Named:
    """How a model or a library is shown: its ``name``, the ``references.bib`` keys of the works it implements or
    is described in, and (models) one sentence for the paper's methods, completing "<name> is ..."."""

    name: str
    cite: tuple[str, ...] = ()
    about: str = ""


MODELS = {
    "unet3plus": Named("U-Net 3+", ("huang2020unet3plus",),
                       "an encoder-decoder whose every decoder stage fuses all encoder and coarser decoder scales "
                       "(full-scale skip connections), trained with deep supervision"),
    "ms_unet3plus": Named("MS U-Net 3+", ("huang2020unet3plus",),
                          "U-Net 3+ with an input pyramid: the image, average-pooled to each coarser scale, is "
                          "concatenated to the input of the inner encoder levels"),
    "diffnet": Named("DiffNet", ("arridge2020diffnet",),
                     "a stack of explicit nonlinear diffusion steps on a feature state, each with conductivities "
                     "predicted by a small CNN from the state and the image, so that every step is stable"),
    "ms_diffnet": Named("MS DiffNet", ("arridge2020diffnet",),
                        "DiffNet run coarse to fine: the state diffused at a coarser scale is upsampled to start "
                        "the next finer one"),
    "plain_conv_unet": Named("PlainConvUNet", ("isensee2021nnunet",),
                             "nnU-Net's plain convolutional U-Net, the network of the checkpoint zoo"),
    "nnunet": Named("nnU-Net PlainConvUNet", ("isensee2021nnunet",),
                    "nnU-Net's plain convolutional U-Net with the stages, features and kernels nnU-Net's planner "
                    "chooses for the patch, trained by the comparison's loop"),
    "nnunet_resenc": Named("nnU-Net ResEnc M", ("isensee2024revisited",),
                           "nnU-Net's residual-encoder U-Net with the ResEnc M preset's blocks per stage, trained by "
                           "the comparison's loop"),
}
IMPORTED = Named("nnU-Net", ("isensee2021nnunet",), "a network trained by nnU-Net itself and imported")
IMPORTED_PREFIX = "nnunet_"  # rows of models imported from nnU-Net folders (segzoo.interop.nnunet_import)

LIBRARIES = {
    "monai": Named("MONAI", ("cardoso2022monai",)),
    "scipy": Named("SciPy", ("virtanen2020scipy",)),
    "torch": Named("PyTorch", ("paszke2019pytorch",)),
    "snakemake": Named("Snakemake", ("molder2021snakemake",)),
    "segzoo": Named("segzoo"),
}

# Regions by the labels a dataset declares; one not listed is shown as declared.
REGIONS = {"sc": "spinal cord", "canal": "spinal canal"}


def model(key: str) -> Named:
    """How model ``key`` (a registry name or a comparison row) is shown; a row imported from an nnU-Net folder
    (``nnunet_<folder>``) is nnU-Net with its folder's name; an unknown key is shown as it is."""
    if key in MODELS:
        return MODELS[key]
    if key.startswith(IMPORTED_PREFIX):
        return Named(f"nnU-Net ({key[len(IMPORTED_PREFIX):]})", IMPORTED.cite, IMPORTED.about)
    return Named(key)


def model_name(key: str) -> str:
    return model(key).name


def metric_name(key: str) -> str:
    return METRICS[key].name


def metric_label(key: str) -> str:
    """The name with its unit: ``HD95 (mm)``."""
    return METRICS[key].label


def region_name(key: str) -> str:
    return REGIONS.get(key, key.replace("_", " "))


def library(key: str) -> Named:
    return LIBRARIES.get(key, Named(key))


def implementation(metric: str, evaluate: dict | None = None) -> str:
    """``<Library> <version>: <definition>`` for the page and the paper; ``evaluate`` (the config's section) fills in
    the surface Dice tolerance and the lesion detection rule."""
    from importlib.metadata import version

    names, definition = DEFINITIONS[metric]
    evaluate = evaluate or {}
    detection = {"min_overlap_voxels": 1, "connectivity": 26, **(evaluate.get("detection") or {})}
    values = {"tolerance_mm": evaluate.get("tolerance_mm", 1.0), **detection}
    shown = " + ".join(f"{library(n).name} {version(n)}" if n != "segzoo" else "segzoo" for n in names.split(" + "))
    return f"{shown}: {definition.format(**values)}"
