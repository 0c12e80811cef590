"""``segzoo export CHECKPOINT --onnx OUT``: a trained model as one ONNX file, for deployment and for viewing.

The checkpoint is turned into a model exactly as inference does (:func:`segzoo.inference.trained.load_model`: rebuilt
from its sidecar, weights from safetensors, eval mode), so every model that ``segzoo infer`` runs exports: the four
segzoo models, ``plain_conv_unet`` checkpoints and imported nnU-Net models. Files of flat parameter vectors
(zoo runs, G.pt samples) record no channels and are refused (``segzoo nnunet-export`` takes them).

The ONNX model (opset :data:`OPSET`, weights inside the file) has

* one input ``image``: float32 ``[N, C, X, Y, Z]``, the batch and each spatial side dynamic; every side must be
  a multiple of the model's divisor (pooling levels), which the doc string and the metadata state;
* one output ``logits``: float32 ``[N, R, X, Y, Z]``, the main head in eval mode (no deep-supervision heads):
  one logit per region (sigmoid) or, for an imported softmax model, per class;
* ``metadata_props`` (shown by Netron under the model's properties): regions, channels, the training patch
  size, spacing and normalisation when the sidecar records them, the source checkpoint and the segzoo version.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export, then onnxscript), the path torch recommends
since 2.9; it handles all four models (max and average pooling, nearest upsampling, instance norm, the
DiffNet's narrow/concatenate stencil) with the spatial sides left symbolic, so no TorchScript fallback is used.
The file is checked with ``onnx.checker.check_model(full_check=True)``, then run with ONNX Runtime (when
installed) on a phantom-sized patch and compared with PyTorch: the largest absolute difference of the logits
must be at most :func:`tolerance` (1e-4 + 1e-4 × the largest |logit|, float32). Only then is the file renamed
into place; on any failure nothing is left.

Why a relative part: float32 rounding differs between PyTorch's and ONNX Runtime's kernels (summation order of
convolutions and instance norm), and grows with the logits' scale. Measured on a 64×64×32 patch, 2 channels,
weights perturbed to give large logits: U-Net 3+ base 8 (config size) 9e-5 at max |logit| 12, base 32 2.2e-4
at 23 (1e-5 of the scale); DiffNet 1.4e-6, MS DiffNet 3.9e-6, PlainConvUNet 1.3e-5. A wrong operator gives
differences of the order of the logits themselves.
"""

from __future__ import annotations

import importlib.util
import json
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segzoo.checkpoint import PICKLE_SUFFIXES, paths
from segzoo.data.phantom import PhantomSpec
from segzoo.errors import SegzooError
from segzoo.inference.trained import TrainedModel, load_model
from segzoo.io import output_file, refuse_existing

OPSET = 20  # ONNX opset of the exported file: torch 2.13's default for the dynamo exporter (ONNX Runtime >= 1.17)
ABS_TOLERANCE = 1e-4  # allowed max |ONNX Runtime - PyTorch| of the logits (float32) on the verification patch ...
REL_TOLERANCE = 1e-4  # ... plus this fraction of the patch's largest |logit| (PyTorch's)
INPUT, OUTPUT = "image", "logits"
VERIFY_SEED = 0  # the verification patch: seeded standard-normal noise (z-scored intensities)


@dataclass
class Exported:
    path: Path
    model: str
    divisor: int
    channels: int
    outputs: int
    verify_patch: list[int] | None  # None: ONNX Runtime is not installed, the file was not run
    max_abs_diff: float | None
    max_abs_logit: float | None

    @property
    def tolerance(self) -> float | None:
        return None if self.max_abs_logit is None else tolerance(self.max_abs_logit)


def tolerance(max_abs_logit: float) -> float:
    """The largest |ONNX Runtime - PyTorch| a logit may show: absolute, plus relative to the logits' scale."""
    return ABS_TOLERANCE + REL_TOLERANCE * max_abs_logit


def export_onnx(checkpoint: str | Path, out: str | Path, *, force: bool = False,
                verify_patch: list[int] | None = None) -> Exported:
    """Write ``out`` (an ONNX file) from ``checkpoint``; refuse an existing ``out`` unless ``force``."""
    out = Path(out)
    if out.is_dir():
        raise SegzooError(f"{out}: a folder; give the ONNX file to write, e.g. {out / 'model.onnx'}")
    if not force:
        refuse_existing(out)
    _need("onnx", "onnxscript")
    model, trained = _load(checkpoint)
    divisor = int(getattr(model, "divisor", 1))
    patch = _verify_patch(verify_patch, trained, divisor)
    proto = _export(model, len(trained.channels), divisor, str(checkpoint))
    _describe(proto, model, trained, Path(checkpoint), divisor)
    import onnx

    with output_file(out, overwrite=force) as tmp:
        onnx.save_model(proto, tmp)
        try:
            onnx.checker.check_model(tmp, full_check=True)
        except onnx.checker.ValidationError as e:
            raise SegzooError(f"{checkpoint}: the exported ONNX model fails onnx.checker ({_first_line(e)})") from None
        diff = scale = None
        if importlib.util.find_spec("onnxruntime") is not None:
            diff, scale = max_abs_difference(model, tmp, len(trained.channels), patch, str(checkpoint))
            if not diff <= tolerance(scale):
                raise SegzooError(f"{checkpoint}: ONNX Runtime and PyTorch differ by up to {diff:.3g} on a "
                                  f"{[1, len(trained.channels), *patch]} patch (tolerance {tolerance(scale):.3g}"
                                  f" at max |logit| {scale:.3g}); nothing written")
    return Exported(out, trained.model, divisor, len(trained.channels), len(trained.heads),
                    patch if diff is not None else None, diff, scale)


def max_abs_difference(model: torch.nn.Module, onnx_file: Path, channels: int, patch: list[int],
                       source: str | None = None) -> tuple[float, float]:
    """Largest |ONNX Runtime - PyTorch| of the logits on one seeded noise patch [1, channels, *patch], and the
    largest |logit| (PyTorch's). ``source`` names the model in errors (default: the file)."""
    import onnxruntime as ort

    image = torch.randn((1, channels, *patch), generator=torch.Generator().manual_seed(VERIFY_SEED))
    with torch.no_grad():
        expected = model(image).float().numpy()
    source = source or str(onnx_file)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    try:
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        (got,) = session.run([OUTPUT], {INPUT: image.numpy()})
    except Exception as e:  # onnxruntime's own error types
        raise SegzooError(f"{source}: ONNX Runtime cannot run the exported model on a {list(image.shape)} patch "
                          f"({type(e).__name__}: {_first_line(e)})") from None
    if got.shape != expected.shape:
        raise SegzooError(f"{source}: ONNX Runtime gives logits {list(got.shape)}, PyTorch {list(expected.shape)}")
    return float(np.abs(got.astype(np.float64) - expected).max()), float(np.abs(expected).max())


def _need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise SegzooError(f"ONNX export needs {', '.join(missing)}: pip install -c constraints.txt -e '.[onnx]'")


def _load(checkpoint: str | Path) -> tuple[torch.nn.Module, TrainedModel]:
    """The model in eval mode on the CPU, as inference loads it, and its sidecar."""
    path = Path(checkpoint)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    if (path.is_file() and path.suffix not in PICKLE_SUFFIXES | {".safetensors", ".json"}
            and not paths(stem)[0].is_file()):
        raise SegzooError(f"{path}: not a segzoo checkpoint (give <stem>.safetensors with its <stem>.json sidecar, "
                          f"the stem, or an imported model folder)")
    try:
        return load_model(checkpoint, torch.device("cpu"))
    except SegzooError as e:
        if "not a model checkpoint segzoo can rebuild" not in str(e):
            raise
        raise SegzooError(f"{e}; export a trained run's best or final checkpoint or an imported nnU-Net model (zoo "
                          f"runs and G.pt samples hold parameter vectors: use segzoo nnunet-export)") from None


def _verify_patch(patch: list[int] | None, trained: TrainedModel, divisor: int) -> list[int]:
    """The patch ONNX Runtime is checked on: the one given, else the phantom's shape rounded up to the divisor."""
    if patch is None:
        return [math.ceil(s / divisor) * divisor for s in PhantomSpec().shape]
    if len(patch) != 3 or any(s <= 0 or s % divisor for s in patch):
        raise SegzooError(f"--verify-patch {patch}: give three positive sides, each a multiple of {divisor} "
                          f"(the {trained.model} model's divisor)")
    return list(patch)


def _export(model: torch.nn.Module, channels: int, divisor: int, source: str):
    """The ONNX ModelProto of ``model``, traced by torch.export with the batch and spatial sides symbolic."""
    k = max(2, math.ceil(8 / divisor))  # at least 2: torch.export specialises a side of size 1 (or one divisor)
    example = torch.zeros(2, channels, k * divisor, k * divisor, k * divisor)
    dynamic = ({0: "N", 2: "X", 3: "Y", 4: "Z"},)
    with tempfile.TemporaryDirectory(prefix="segzoo-onnx-") as artifacts, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            program = torch.onnx.export(model, (example,), None, dynamo=True, input_names=[INPUT],
                                        output_names=[OUTPUT], dynamic_shapes=dynamic, opset_version=OPSET,
                                        external_data=False, optimize=True, verbose=False, report=False,
                                        artifacts_dir=artifacts)
        except Exception as e:  # torch.export or the ONNX translation: name the model and the first line
            raise SegzooError(f"{source}: torch.onnx.export failed ({type(e).__name__}: {_first_line(e)})") from None
    return program.model_proto


def _describe(proto, model: torch.nn.Module, trained: TrainedModel, checkpoint: Path, divisor: int) -> None:
    """Doc string, producer and metadata_props: what a Netron user (or a deployment) needs to feed the model."""
    from segzoo import __version__

    sidecar = trained.sidecar  # how it was made: step, seed, config hash, the tensors' digest
    channels = trained.channels
    heads_key = "regions" if trained.output == "sigmoid" else "classes"
    heads = trained.heads
    names = list(heads)
    kind = trained.output
    pre = trained.preprocessing or {}
    nnunet = trained.nnunet
    proto.producer_name, proto.producer_version = "segzoo", __version__
    proto.doc_string = (
        f"segzoo {trained.model} from {checkpoint.name}. Input '{INPUT}': float32 [N, C, X, Y, Z], "
        f"C = {len(channels)} ({', '.join(map(str, channels))}); N, X, Y and Z are dynamic, X, Y and Z must be "
        f"multiples of {divisor}. The image is preprocessed as in training "
        + ("(segzoo preprocessing: RAS voxel axes, the target spacing and normalisation in the metadata). "
           if nnunet is None else "(nnU-Net's preprocessing: see nnunet_preprocessing in the metadata). ")
        + f"Output '{OUTPUT}': float32 [N, {len(names)}, X, Y, Z], the main head in eval mode, one logit per "
        + (f"region ({', '.join(names)}); sigmoid gives each region's probability." if kind == "sigmoid"
           else f"class ({', '.join(names)}); softmax over them gives the probabilities."))
    props = {
        "segzoo_version": __version__,
        "model": trained.model,
        "model_options": trained.model_options,
        "input": f"{INPUT} float32 [N, C, X, Y, Z]; X, Y, Z multiples of {divisor}",
        "output": f"{OUTPUT} float32 [N, {len(names)}, X, Y, Z]; {kind}",
        "divisor": divisor,
        "channels": channels,
        heads_key: heads,
        "patch_size": trained.patch_size,
        "spacing_mm": pre.get("target_spacing"),
        "normalization": pre.get("normalization"),
        "label_values": pre.get("label_values"),
        "spacing_range_mm": pre.get("spacing_range"),
        "nnunet_preprocessing": nnunet,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sidecar.get("tensors_sha256"),
        "step": sidecar.get("step"),
        "seed": sidecar.get("seed"),
        "config_hash": sidecar.get("config_hash"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=True), opset {OPSET}",
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        if value is None:
            continue
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
