"""The GPU lock pool, with a faked device count: exclusive devices, preset values kept, killed holders freed."""

import json
import os
import signal
import subprocess
import sys

import pytest

from segzoo.devices import COUNT_ENV, acquire, resolve_device

HOLD = """
import json, os, sys, time
from segzoo.devices import acquire
lease = acquire(lock_dir=sys.argv[1], count=2, poll_seconds=0.02)
start = time.time()
time.sleep(float(sys.argv[2]))
print(json.dumps({"device": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time()}), flush=True)
"""


@pytest.fixture(autouse=True)
def restore_cuda_visible_devices():
    """acquire() sets CUDA_VISIBLE_DEVICES in this process; put it back as it was after each test."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    yield
    if before is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = before


def _env():
    return {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}


def test_eight_processes_never_share_one_of_two_devices(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "0.3"], env=_env(), stdout=subprocess.PIPE,
                              text=True) for _ in range(8)]
    leases = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert {lease["device"] for lease in leases} == {"0", "1"}
    for device in ("0", "1"):
        spans = sorted((lease["start"], lease["end"]) for lease in leases if lease["device"] == device)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"device {device} held twice at once"


HOLDER = """
import sys, time
from segzoo.devices import acquire
acquire(lock_dir=sys.argv[1], count=1)
print("held", flush=True)
time.sleep(600)
"""


def test_killed_holder_frees_its_device(tmp_path):
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):
            acquire(lock_dir=tmp_path, count=1, timeout=0.3, poll_seconds=0.05)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        lease = acquire(lock_dir=tmp_path, count=1, timeout=5, poll_seconds=0.05)
        assert lease.devices == "0"
        lease.release()
    finally:
        holder.kill()


FORKING_HOLDER = """
import os, sys, time
from segzoo.devices import acquire
acquire(lock_dir=sys.argv[1], count=1)
child = os.fork()  # like a DataLoader worker
if child == 0:
    time.sleep(600)
    os._exit(0)
print(child, flush=True)
time.sleep(600)
"""


def test_forked_workers_do_not_keep_a_dead_holders_device(tmp_path):
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    holder = subprocess.Popen([sys.executable, "-c", FORKING_HOLDER, str(tmp_path)], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        lease = acquire(lock_dir=tmp_path, count=1, timeout=2, poll_seconds=0.05)  # the child still runs
        assert lease.devices == "0"
        lease.release()
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_preset_value_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    lease = acquire(lock_dir=tmp_path, count=8)
    assert lease.devices == "3,5" and lease.fd is None
    assert not list(tmp_path.iterdir())  # no lock taken


def test_device_resolution(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv(COUNT_ENV, "0")
    assert resolve_device("auto") == "cpu"
    monkeypatch.setenv(COUNT_ENV, "2")
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # someone said: no GPU
    assert resolve_device("auto") == "cpu"
