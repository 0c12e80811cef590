"""Which GPU a training job uses: a pool of per-device lock files (DESIGN section 5).

Snakemake's ``--resources gpu=N`` only caps how many GPU jobs run at once; it never says which
device. A job calls :func:`acquire` before CUDA initialises:

* if ``CUDA_VISIBLE_DEVICES`` is already set (SLURM, a user, a scheduler), it is kept as it is;
* otherwise the job takes the first device whose lock file it can ``flock`` and sets
  ``CUDA_VISIBLE_DEVICES`` to it. The kernel drops the lock when the process exits or dies, so a
  killed job frees its device with no clean-up.

Locks live in ``$SEGZOO_GPU_LOCK_DIR`` or a per-user folder under the temp dir: jobs of one user
share the pool; set the variable to a folder every user can write to for a machine-wide pool.

No torch import here: the Snakefile uses :func:`resolve_device` to decide whether rules ask for a GPU.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from segzoo.errors import SegzooError

COUNT_ENV = "SEGZOO_GPU_COUNT"  # overrides detection (tests fake devices with it)
LOCK_DIR_ENV = "SEGZOO_GPU_LOCK_DIR"


def gpu_count() -> int:
    """GPUs on this machine, without initialising CUDA."""
    if os.environ.get(COUNT_ENV):
        return int(os.environ[COUNT_ENV])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


class GpuTimeout(SegzooError, TimeoutError):
    """Every GPU stayed locked for longer than the caller would wait."""


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible (or preset by a scheduler), else ``cpu``."""
    if device != "auto":
        return device
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:  # a scheduler or the user decided; "" or -1 means no GPU
        return "cpu" if preset.strip() in ("", "-1") else "cuda"
    return "cuda" if gpu_count() > 0 else "cpu"


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"segzoo-gpu-locks-{os.getuid()}")


@dataclass
class Lease:
    """A held device: ``devices`` is the CUDA_VISIBLE_DEVICES value; ``fd`` the held lock (None if preset)."""

    devices: str
    fd: int | None = None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def forget_in_child(self) -> None:
        """In a forked child: close the inherited descriptor so only the parent holds the lock."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def acquire(lock_dir: str | Path | None = None, count: int | None = None, poll_seconds: float = 0.5,
            timeout: float | None = None) -> Lease:
    """Keep a preset ``CUDA_VISIBLE_DEVICES`` or lock a free device and set it; wait while all are taken."""
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:
        return Lease(preset)
    count = gpu_count() if count is None else count
    if count < 1:
        raise SegzooError("device cuda: no GPU found to assign (nvidia-smi lists none); set device: cpu")
    lock_dir = Path(lock_dir) if lock_dir else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for device in range(count):
            fd = os.open(lock_dir / f"gpu{device}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            lease = Lease(str(device), fd)
            # Forked children (DataLoader workers) must not keep the lock alive after this process dies.
            os.register_at_fork(after_in_child=lease.forget_in_child)
            os.environ["CUDA_VISIBLE_DEVICES"] = lease.devices
            return lease
        if deadline is not None and time.monotonic() > deadline:
            raise GpuTimeout(f"all {count} GPUs stayed taken for {timeout} s (locks in {lock_dir})")
        time.sleep(poll_seconds)
