"""What the rootless Podman image costs: build time and size, and the wall time of the ci preset's data stage and one
training inside the container against the same run outside (the venv), alternating, each from an empty results/.

    .venv/bin/python bench/container.py [--build] [--repeats 3] [--outside-python VENV/bin/python]   # as root

--build first builds the image with tests/container_image.py and times it; without it, the image and its user must
exist. Prints a Markdown table; copy it into bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import PHANTOM, workflow_copy  # noqa: E402
from container_image import IMAGE, USER, build, missing, podman  # noqa: E402

TRAINING = f"results/train/{PHANTOM}/unet3plus/seed0/best.safetensors"
SNAKEMAKE = [TRAINING, "--cores", "all", "--resources", "gpu=2", "--configfile", "presets/ci.yaml"]


def outside(folder: Path, python: Path) -> float:
    """The same run with the Snakemake beside ``python`` (a venv's), as tests/conftest.py's snakemake() runs it."""
    wf = workflow_copy(folder / "wf")
    began = time.perf_counter()
    result = subprocess.run([str(python.parent / "snakemake"), *SNAKEMAKE], cwd=wf, capture_output=True, text=True,
                            env={**os.environ, "PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return seconds


def inside(folder: Path) -> float:
    (folder / "results").mkdir(parents=True)
    shutil.chown(folder / "results", USER, USER)
    began = time.perf_counter()
    result = podman("run", "--rm", "--pull=never", "--network=none", "--userns=keep-id:uid=1000,gid=1000",
                    f"--volume={folder / 'results'}:/work/results", IMAGE, "snakemake", *SNAKEMAKE,
                    capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return seconds


def training(folder: Path) -> tuple[float, str]:
    """The training loop's own time (timing.json, without Snakemake's and the interpreters' start-up) and the
    checkpoint's SHA-256."""
    run = next(folder.rglob(str(Path(TRAINING).parent.relative_to("results"))))
    checkpoint = hashlib.sha256((run / Path(TRAINING).name).read_bytes()).hexdigest()
    return json.loads((run / "timing.json").read_text())["seconds"], checkpoint


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", action="store_true", help="build the image first and time it")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--outside-python", type=Path, default=Path(sys.executable),
                        help="the python of the venv that runs outside (default: this one); e.g. a venv on the "
                             "same Python build as the image's, to see the container's own cost")
    args = parser.parse_args()
    rows = []
    if args.build:
        record = build()
        rows += [(f"image build: {k.removesuffix('_seconds')}", f"{v:.0f} s")
                 for k, v in record.items() if k.endswith("_seconds")]
        rows.append(("image size (podman image inspect)", f"{record['image_bytes'] / 1e9:.2f} GB"))
    why = missing()
    if why:
        sys.exit(f"bench/container.py: {why}")
    began = time.perf_counter()
    podman("run", "--rm", "--pull=never", "--network=none", IMAGE, "true")
    rows.append(("`podman run IMAGE true`", f"{time.perf_counter() - began:.2f} s"))
    walls: dict[str, list[float]] = {"outside": [], "inside": []}
    loops: dict[str, list[float]] = {"outside": [], "inside": []}
    checkpoints = set()
    for _ in range(args.repeats):
        for where, runner in (("outside", functools.partial(outside, python=args.outside_python)),
                              ("inside", inside)):
            folder = Path(tempfile.mkdtemp(prefix=f"segzoo-bench-{where}-"))
            try:
                folder.chmod(0o755)
                walls[where].append(runner(folder))
                seconds, checkpoint = training(folder)
                loops[where].append(seconds)
                checkpoints.add(checkpoint)
            finally:
                shutil.rmtree(folder)
    for where in ("outside", "inside"):
        rows.append((f"data stage + one training, {where} (median of {args.repeats})",
                     f"{statistics.median(walls[where]):.1f} s ({', '.join(f'{s:.1f}' for s in walls[where])})"))
    rows.append(("wall-time ratio inside / outside",
                 f"{statistics.median(walls['inside']) / statistics.median(walls['outside']):.2f}"))
    rows.append(("training loop (timing.json) ratio inside / outside",
                 f"{statistics.median(loops['inside']) / statistics.median(loops['outside']):.2f}"))
    version = subprocess.run([str(args.outside_python), "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True).stdout.strip()
    rows.append(("checkpoints of all these runs", "one file" if len(checkpoints) == 1
                 else f"{len(checkpoints)} different files"))
    print(f"segzoo image {IMAGE}, run by {USER} with rootless Podman; outside: {args.outside_python} "
          f"(Python {version})\n")
    print("| measure | value |\n| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
