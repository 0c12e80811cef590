"""A real one-node SLURM cluster on localhost for tests: munged, slurmctld and slurmd with two fake GPUs.

Needs root and Debian's slurm-wlm + munge (`.ci/run` installs them under CI=true). The GPUs are character
devices made with mknod (SLURM refuses plain files); SLURM hands them out by setting CUDA_VISIBLE_DEVICES.
Everything it starts it stops again; a munged that was already running is used and left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
# Snakemake's jobstep plugin starts each job's command with srun after dropping every SLURM_* variable,
# SLURM_CONF included; srun then reads the default path. The cluster links it there while it runs.
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


def missing() -> str | None:
    """Why a local cluster cannot start here, or None."""
    if os.geteuid() != 0:
        return "not root (slurmd and munged must start as root/munge)"
    absent = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge)"
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        return f"{DEFAULT_CONF} exists: this machine has a SLURM set-up of its own, which the test leaves alone"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _munge_works() -> bool:
    try:
        token = subprocess.run(["munge", "-n"], capture_output=True, timeout=10).stdout
        return subprocess.run(["unmunge"], input=token, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _start_munge() -> int | None:
    """Start munged as user munge; returns its pid, or None when one was already running."""
    if MUNGE_SOCKET.exists() and _munge_works():
        return None
    for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True)
        shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    subprocess.run(["runuser", "-u", "munge", "--", shutil.which("munged") or "/usr/sbin/munged"], check=True)
    for _ in range(50):
        if _munge_works():
            return int(Path("/run/munge/munged.pid").read_text())
        time.sleep(0.1)
    raise RuntimeError("munged started but munge/unmunge do not work")


def write_config(folder: Path, cpus: int, memory_mb: int) -> Path:
    host = socket.gethostname()
    for i in range(2):
        device = folder / f"gpu{i}"
        if not device.exists():
            os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a character device, like /dev/null
    (folder / "state").mkdir(exist_ok=True)
    (folder / "spool").mkdir(exist_ok=True)
    (folder / "gres.conf").write_text(f"NodeName={host} Name=gpu File={folder}/gpu[0-1]\n")
    conf = folder / "slurm.conf"
    conf.write_text(f"""ClusterName=segzootest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@contextmanager
def local_cluster(folder: Path, cpus: int = 2, memory_mb: int = 8000):
    """Yields the environment (SLURM_CONF) for sbatch, squeue and Snakemake's SLURM plugin."""
    munged = _start_munge()
    conf = write_config(folder, cpus, memory_mb)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
    DEFAULT_CONF.symlink_to(conf)
    try:
        subprocess.run([shutil.which("slurmctld") or "/usr/sbin/slurmctld", "-f", str(conf)], env=env, check=True)
        subprocess.run([shutil.which("slurmd") or "/usr/sbin/slurmd", "-f", str(conf)], env=env, check=True)
        for _ in range(100):
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            if state.strip() == "idle":
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the SLURM node did not come up: {state!r}; see {folder}/slurmctld.log, slurmd.log")
        yield env
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        _stop(folder / "slurmd.pid")
        _stop(folder / "slurmctld.pid")
        DEFAULT_CONF.unlink()
        if munged is not None:
            os.kill(munged, signal.SIGTERM)
