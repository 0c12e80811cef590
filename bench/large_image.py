"""Large images (issue 15, item 7): time and peak memory of each step on a 512×512×61 CT case.

    .venv/bin/python bench/large_image.py [--cases 61 20 16] [--steps 3] [--models unet3plus] [--tta] [--keep]

Writes a synthetic CT dataset (nnU-Net v2 layout, seeded): the first case, 512×512×61 at 0.75×0.75×5 mm
stored LPS, is the labelled test case (imagesTs); the others are the training cases. Then runs each step as
the Snakemake rules do, each in its own process so that its peak RSS is its own (os.wait4): verify,
fingerprint and plan (where `segzoo plan` exists), preprocess, splits, a few training steps of U-Net 3+ and
DiffNet at config.yaml's widths (patch and batch from the plan, else from config.yaml), `segzoo predict` of
the large case with each run (and with --tta), then a stage-by-stage profile of the large case beside a
proposed fix. Prints Markdown tables for bench/RESULTS.md. 25–40 min on 2 busy cores, most of it the
sliding window over the large case (predict) and the validation case (train).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The bound, chosen before measuring: a 16 GiB CPU machine running `snakemake --cores 4` (four one-thread jobs
# at once) has 4 GiB per job. One float32 copy of the 512×512×61 image is 61 MiB, so 4 GiB is ~67 copies.
BOUND_MIB = 4096
SHAPE_XY = (512, 512)
SPACING_Z = 5.0  # mm
IN_PLANE = (0.75, 0.70, 0.74)  # mm per case, cycled: the training median (0.72) makes preprocessing resample
# the large case (to 533×533×61) instead of copying it, as a real CT collection with varied spacing would
LABELS = {"background": 0, "organ": [1, 2], "lesion": 2}  # nnU-Net regions, like LiTS: organ = organ + lesion
MODELS = ("unet3plus", "diffnet")


def make_ct(rng: np.random.Generator, nz: int, sxy: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Int16 HU image, uint8 label map and an LPS affine: air outside an elliptic body, soft tissue,
    lungs in the upper half, a vertebral body, an organ (label 1) holding a lesion (label 2)."""
    shape = (*SHAPE_XY, nz)
    x, y, z = np.ogrid[: shape[0], : shape[1], :nz]
    x, y, z = (x - shape[0] / 2) * sxy, (y - shape[1] / 2) * sxy, (z - nz / 2) * SPACING_Z  # mm from the centre
    hu = np.full(shape, -1000, dtype=np.float32)  # air
    body = (x / 170) ** 2 + (y / 120) ** 2 <= 1  # a 340×240 mm trunk
    hu[np.broadcast_to(body, shape)] = 40  # soft tissue
    lungs = ((np.abs(x) - 75) / 55) ** 2 + ((y + 10) / 70) ** 2 <= 1
    hu[np.broadcast_to(lungs & (z > 0), shape)] = -800
    hu[np.broadcast_to((x / 18) ** 2 + ((y + 85) / 15) ** 2 <= 1, shape)] = 700  # vertebral body (bone)
    half = min(60.0, 0.4 * nz * SPACING_Z)  # organ's S-I half-length, mm: fits thin cases too
    organ = ((x + 70) / 80) ** 2 + ((y - 40) / 55) ** 2 + (z / half) ** 2 <= 1
    lesion = (x + 80) ** 2 + (y - 40) ** 2 + z**2 <= 12**2  # a 12 mm radius ball inside the organ
    label = np.zeros(shape, dtype=np.uint8)
    label[organ] = 1
    label[lesion] = 2
    hu[organ] = 60
    hu[lesion] = 20
    hu += rng.normal(0, 15, shape).astype(np.float32)  # noise, HU
    affine = np.diag([-sxy, -sxy, SPACING_Z, 1.0])  # LPS storage: preprocessing reorients to RAS
    return np.round(hu).astype(np.int16), label, affine


def write_dataset(root: Path, depths: list[int]) -> list[str]:
    from segzoo.data.nifti import save_nifti

    ids = []
    for i, nz in enumerate(depths):
        part = "Ts" if i == 0 else "Tr"
        (root / f"images{part}").mkdir(parents=True, exist_ok=True)
        (root / f"labels{part}").mkdir(exist_ok=True)
        image, label, affine = make_ct(np.random.default_rng([0, i]), nz, IN_PLANE[i % len(IN_PLANE)])
        ids.append(f"ct_{i:03d}")
        save_nifti(image, affine, root / f"images{part}" / f"{ids[-1]}_0000.nii.gz")
        save_nifti(label, affine, root / f"labels{part}" / f"{ids[-1]}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": LABELS, "regions_class_order": [1, 2],
        "numTraining": len(depths) - 1, "file_ending": ".nii.gz"}, indent=2))
    return ids


def run_step(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and output of one child process; raise if it fails."""
    start = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed; its last output:\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, log.read_text()  # ru_maxrss: KiB on Linux


def settings(steps: int) -> tuple[dict[str, str], str]:
    """Per model the JSON that `segzoo train` reads (as rules/common.smk builds it), and `segzoo plan`'s."""
    from segzoo.config import load_config

    config = load_config(REPO / "config.yaml", schema_path=REPO / "schemas" / "config.schema.yaml")
    train = {k: v for k, v in config["train"].items() if k not in ("models", "seeds", "threads", "gpus_per_job")}
    train.update(steps=steps, val_every=steps, checkpoint_every=steps)  # one validation, at the end
    plan = {"models": {m: config["models"][m] for m in MODELS}, "memory_mb": config.get("plan", {}).get("memory_mb"),
            "spacing": None, "normalization": None,  # planned: median spacing, CT normalisation
            "patch_size": train["patch_size"], "batch_size": train["batch_size"]}
    return {m: json.dumps({"train": train, "model": config["models"][m]}) for m in MODELS}, json.dumps(plan)


def profile(image: Path, label: Path, pre: Path, case: str, patch: list[int]) -> None:
    """Stage by stage for one case: seconds and peak RSS growth, the current code beside the proposed fix."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import Spacing
    from scipy import ndimage

    from segzoo.data import preprocess as pp
    from segzoo.data.nifti import load_volume
    from segzoo.data.preprocessed import Preprocessed

    data = Preprocessed(pre)
    target, values, props = data.spacing, data.label_values, data.properties(case)
    rows = []
    torch.set_grad_enabled(False)

    def stage(name, fn):
        with open("/proc/self/clear_refs", "w") as f:  # Linux: reset this process's peak RSS (VmHWM)
            f.write("5")
        before = _rss("VmRSS")
        start = time.perf_counter()
        value = fn()
        rows.append((name, time.perf_counter() - start, _rss("VmHWM") - before))
        return value

    def scipy_resample(channels, src, dst, shape, order, mode="nearest"):  # the proposed fix
        m = np.linalg.solve(np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64))
        return [ndimage.affine_transform(c, m[:3, :3], m[:3, 3], output_shape=tuple(shape), order=order,
                                         mode=mode, output=np.float32) for c in channels]

    vol = stage("read image (gzip, int16)", lambda: load_volume(image))
    ras = stage("float32 + reorient to RAS", lambda: pp._to_ras(pp._as_metatensor(vol.data[None].astype(np.float32),
                                                                                     vol.affine)))
    spacing = Spacing(pixdim=target, mode=pp.IMAGE_ORDER, padding_mode="nearest")
    out = stage("image: MONAI Spacing, cubic (now)", lambda: spacing(ras))
    fix = stage("image: scipy affine_transform, cubic (fix)",
                lambda: scipy_resample(ras.numpy(), ras.affine, out.affine, out.shape[1:], pp.IMAGE_ORDER))
    same_image = float(np.abs(fix[0] - out.numpy()[0]).max())
    lab = load_volume(label)
    onehot = pp._to_ras(pp._as_metatensor(pp._one_hot(lab.data, values), lab.affine))
    seg = stage("labels: one-hot, MONAI Spacing, cubic (now)",
                lambda: pp._argmax_values(spacing(onehot).numpy(), values))

    def labels_one_at_a_time():  # running argmax: one resampled channel alive at a time
        best, seg = None, None
        for i, v in enumerate(values):
            p = scipy_resample([onehot.numpy()[i]], onehot.affine, out.affine, out.shape[1:], pp.IMAGE_ORDER)[0]
            if best is None:
                best, seg = p, np.full(p.shape, v, dtype=pp.label_dtype(values))
            else:
                better = p > best
                best[better], seg[better] = p[better], v
        return seg

    seg_fix = stage("labels: one channel at a time, scipy (fix)", labels_one_at_a_time)
    image = data.image(case)
    regions = len(data.regions)
    stand_in = torch.nn.Conv3d(image.shape[0], regions, 1)  # a model that costs nothing: buffers only
    prob = stage("sliding window buffers (1×1×1 conv)", lambda: sliding_window_inference(
        torch.from_numpy(np.ascontiguousarray(image))[None], patch, 4, stand_in, overlap=0.5,
        mode="gaussian")[0].sigmoid().numpy())  # U-Net 3+'s patch; predict's sw batch and overlap
    back = stage("to_original_grid, bilinear (now)", lambda: pp.to_original_grid(prob, props, mode="bilinear"))
    back_fix = stage("scipy affine_transform, linear (fix)", lambda: scipy_resample(
        prob, props["preprocessed"]["affine"], props["original"]["affine"], props["original"]["shape"], 1,
        mode="grid-constant"))  # zeros outside the crop, interpolated at its edge as torch's grid_sample does
    print("| stage | s | peak growth MiB |\n| --- | ---: | ---: |")
    for name, seconds, mib in rows:
        print(f"| {name} | {seconds:.1f} | {mib:.0f} |")
    print(f"\nfix vs now: image max |diff| {same_image:.2g}; labels agree on {100 * (seg_fix == seg).mean():.4f} % "
          f"of voxels; probabilities back max |diff| {np.abs(np.stack(back_fix) - back).max():.2g}")


def _rss(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[61, 20, 16],
                        help="slices per case: the first is the large test case, then at least two training cases")
    parser.add_argument("--steps", type=int, default=3, help="training steps per model (then one validation)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--tta", action="store_true", help="also predict with --tta (8 flips: ~8× the time)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for training")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    parser.add_argument("--profile", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        image, label, pre, case, patch = args.profile
        profile(Path(image), Path(label), Path(pre), case, [int(p) for p in patch.split(",")])
        return
    if len(args.cases) < 3:
        parser.error("--cases: the large case and at least two training cases (one to train, one to validate)")

    load, models = os.getloadavg(), args.models
    tmp = Path(tempfile.mkdtemp(prefix="segzoo_large_"))
    try:
        raw, pre, logs = tmp / "Dataset900_LargeCT", tmp / "pre", tmp / "logs"
        logs.mkdir()
        ids = write_dataset(raw, args.cases)
        big = ids[0]
        segzoo = [sys.executable, "-m", "segzoo"]
        # `segzoo plan` (nnU-Net-style planning of spacing, normalisation, patch and batch) where this checkout
        # has it, as the Snakemake rules run it; otherwise config.yaml's spacing (median) and patch
        planned = re.search(r"^\s+plan\s", run_step([*segzoo, "--help"], logs / "help.log")[2], re.M) is not None
        train_json, plan_json = settings(args.steps)
        rows = []

        def step(name: str, cmd: list[str], shape_in: str = "", shape_pre: str = "") -> None:
            seconds, peak, _ = run_step(cmd, logs / f"{len(rows):02d}_{name.split()[0]}.log")
            rows.append([name, shape_in, shape_pre, seconds, peak])
            print(f"{name}: {seconds:.1f} s, {peak:.0f} MiB", file=sys.stderr)

        all_in = f"{len(ids)} cases, 512×512×{{{','.join(map(str, args.cases))}}}"
        step("baseline: import segzoo.predict (torch, MONAI)", [sys.executable, "-c", "import segzoo.predict"])
        step("verify", [*segzoo, "verify", str(raw)], all_in)
        fingerprint = []
        if planned:
            step("fingerprint", [*segzoo, "fingerprint", str(raw), "--out", str(tmp / "fingerprint.json"),
                                 "--seed", "0"], all_in)
            step("plan", [*segzoo, "plan", "--fingerprint", str(tmp / "fingerprint.json"),
                          "--out", str(tmp / "plans.json"), "--settings", plan_json])
            fingerprint = ["--fingerprint", str(tmp / "fingerprint.json")]
        step("preprocess", [*segzoo, "preprocess", str(raw), "--out", str(pre), *fingerprint], all_in)
        shapes = {c: json.loads((pre / f"{c}.json").read_text())["preprocessed"]["shape"] for c in ids}
        big_in, big_pre = "×".join(map(str, (*SHAPE_XY, args.cases[0]))), "×".join(map(str, shapes[big]))
        rows[-1][2] = f"largest {big_pre}"
        splits = tmp / "splits.json"
        step("splits", [*segzoo, "splits", str(pre), "--out", str(splits), "--seed", "0"])
        val = json.loads(splits.read_text())["val"][0]
        patches, plans = {}, ["--plans", str(tmp / "plans.json")] if planned else []
        for model in models:
            step(f"train {model}: {args.steps} steps + validation", [
                *segzoo, "train", "--data", str(pre), "--splits", str(splits), "--model", model, "--seed", "0",
                "--out", str(tmp / "runs" / model), "--settings", train_json[model], "--device", "cpu",
                "--threads", str(args.threads), "--no-progress", *plans],
                f"val case {val}", "×".join(map(str, shapes[val])))
            patches[model] = json.loads((tmp / "runs" / model / "best.json").read_text())["patch_size"]
        inputs = tmp / "predict_in"
        inputs.mkdir()
        (inputs / f"{big}_0000.nii.gz").symlink_to(raw / "imagesTs" / f"{big}_0000.nii.gz")
        runs = [(m, []) for m in models] + ([(models[0], ["--tta"])] if args.tta else [])
        for model, extra in runs:
            out = tmp / "predicted" / "_".join([model, *[e.strip("-") for e in extra]])
            step(f"predict {model} {' '.join(extra)}".strip(), [
                *segzoo, "predict", "-i", str(inputs), "-o", str(out), "--run", str(tmp / "runs" / model),
                "--device", "cpu", *extra], big_in, big_pre)
        # not a row: the profile resets its own peak RSS per stage, so the process's peak says nothing
        profile_out = run_step([sys.executable, __file__, "--profile", str(raw / "imagesTs" / f"{big}_0000.nii.gz"),
                                str(raw / "labelsTs" / f"{big}.nii.gz"), str(pre), big,
                                ",".join(map(str, patches[models[0]]))], logs / "profile.log")[2]
        import torch

        print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
              f"{load[0]:.1f} at the start, {os.getloadavg()[1]:.1f} over the last 5 min, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads by default; training --threads {args.threads}); patch "
              + ", ".join(f"{m} {'×'.join(map(str, p))}" for m, p in patches.items())
              + f" ({'segzoo plan' if planned else 'config.yaml'}); bound {BOUND_MIB} MiB per step\n")
        print("| step | case | preprocessed | wall s | peak RSS MiB | ≤ bound |")
        print("| --- | --- | --- | ---: | ---: | --- |")
        for name, shape_in, shape_pre, seconds, peak in rows:
            print(f"| {name} | {shape_in} | {shape_pre} | {seconds:.1f} | {peak:.0f} | "
                  f"{'pass' if peak <= BOUND_MIB else 'FAIL'} |")
        print("\nProfile of the large case (one process, peak RSS growth over the RSS before each stage):\n")
        print(profile_out)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
