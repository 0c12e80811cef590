"""The segzoo image for the container test, built and run without root: an ordinary user, a Debian base made by
mmdebstrap (no image registry is needed), rootless Podman.

    python3 tests/container_image.py        # as root: the user, the base and the image (.ci/run does it, CI=true)

Needs Debian's podman, uidmap, runc and mmdebstrap (`.ci/run` installs them under CI=true). The user gets its
/etc/subuid and /etc/subgid ranges and a Podman configuration: the runc runtime (crun refuses hybrid cgroup
layouts) and native overlay storage (Podman otherwise falls back to vfs, which copies the whole image per layer).
pip inside the build is given this machine's pip settings (`pip config list`: certificate, find-links, indexes),
with every file or folder they name mounted read-only; the Containerfile itself knows nothing of them.
tests/test_container.py runs the image as that user.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER = "segzoo-ci"  # the ordinary user that builds and runs the image
IMAGE = "localhost/segzoo:ci"
BASE = "localhost/debian-python:bookworm"  # FROM of the Containerfile here (its default is python:3.11-slim)
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")  # what the official python:3.11-slim has
SUBID_COUNT = 65536
TOOLS = ("podman", "runuser", "newuidmap", "runc", "mmdebstrap")


def home() -> Path:
    return Path(pwd.getpwnam(USER).pw_dir)


def podman(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """`podman ARGS` as USER, from its home, with a clean environment (as after a login)."""
    env = {"HOME": str(home()), "USER": USER, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                           "podman", *args], cwd=home(), check=check, **kwargs)


def missing() -> str | None:
    """Why the image cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root (the test runs Podman as the ordinary user it builds the image for)"
    absent = [t for t in TOOLS if shutil.which(t) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install podman uidmap runc mmdebstrap)"
    try:
        home()
    except KeyError:
        return f"no user {USER}: build the image first (python3 tests/container_image.py)"
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        return f"{USER} has no image {IMAGE}: build it first (python3 tests/container_image.py)"
    return None


def _subid_start(file: Path) -> int:
    """The first id after every range already handed out in /etc/subuid or /etc/subgid."""
    ends = [int(start) + int(count) for line in file.read_text().splitlines() if line.count(":") == 2
            for _, start, count in [line.split(":")]]
    return max([100000, *ends])


def ensure_user() -> None:
    """USER with a home, subordinate id ranges and its Podman settings."""
    for file in (Path("/etc/subuid"), Path("/etc/subgid")):
        file.touch(mode=0o644)  # usermod adds ranges only to existing files (and useradd then adds one itself)
    try:
        home()
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    for file, option in ((Path("/etc/subuid"), "--add-subuids"), (Path("/etc/subgid"), "--add-subgids")):
        if not any(line.startswith(f"{USER}:") for line in file.read_text().splitlines()):
            start = _subid_start(file)
            subprocess.run(["usermod", option, f"{start}-{start + SUBID_COUNT - 1}", USER], check=True)
    config = home() / ".config" / "containers"
    config.mkdir(parents=True, exist_ok=True)
    (config / "containers.conf").write_text('[engine]\nruntime = "runc"\n')
    (config / "storage.conf").write_text('[storage]\ndriver = "overlay"\n')
    for path in (home() / ".config", config, *config.iterdir()):
        shutil.chown(path, USER, USER)


def pip_settings() -> tuple[str, list[Path]]:
    """This machine's pip settings as a pip.conf, and the files and folders they name (to mount read-only). None
    where this Python has no pip: the build then uses PyPI."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    settings: dict[str, str] = {}
    lines = sorted(listing.splitlines(), key=lambda line: line.startswith(":env:."))  # PIP_* win, as in pip
    for line in lines:
        key, _, value = line.partition("=")
        section, _, name = key.partition(".")
        if section in ("global", "install", ":env:"):
            settings[name] = value.strip("'\"")
    paths = set()
    for value in settings.values():
        for token in value.split():
            # a file:// index's pages link to files beside the index's folder (../../files/...): mount its parent
            path = Path(token[len("file://"):]).parent if token.startswith("file://") else Path(token)
            if path.is_absolute() and path.exists():
                paths.add(path)
    return "[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())), sorted(paths)


def make_base(folder: Path) -> float:
    """A Debian base with Python 3.11 from Debian's packages, imported as BASE. Returns its seconds."""
    began = time.perf_counter()
    tarball = folder / "rootfs.tar"
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
                    str(tarball)], check=True)
    tarball.chmod(0o644)
    podman("import", str(tarball), BASE, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def build_context(folder: Path) -> Path:
    """The working tree's files that git tracks or would track, readable by USER (the .dockerignore then picks)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    context = folder / "context"
    for name in filter(None, names):
        if (REPO / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, context / name)
    return context


def build(extras: str = "") -> dict[str, float]:
    """USER, BASE (when missing) and IMAGE. Returns the seconds of each part and the image's size in bytes."""
    ensure_user()
    record = {}
    with tempfile.TemporaryDirectory(prefix="segzoo-image-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        if podman("image", "exists", BASE, check=False).returncode != 0:
            record["base_seconds"] = make_base(folder)
        conf, paths = pip_settings()
        (folder / "pip.conf").write_text(conf)
        context = build_context(folder)
        subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
        mounts = [f"--volume={folder / 'pip.conf'}:/etc/pip.conf:ro", *(f"--volume={p}:{p}:ro" for p in paths)]
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
        began = time.perf_counter()
        podman("build", "--network=host", *mounts, f"--build-arg=BASE={BASE}", f"--build-arg=EXTRAS={extras}",
               f"--label=org.opencontainers.image.revision={revision.strip()}", f"--tag={IMAGE}", str(context))
        record["build_seconds"] = time.perf_counter() - began
    size = podman("image", "inspect", "--format", "{{.Size}}", IMAGE, capture_output=True, text=True).stdout
    record["image_bytes"] = int(size)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="segzoo extras to install in the image, e.g. nnunet,onnx")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("tests/container_image.py: run it as root (it creates the user that builds the image)")
    record = build(args.extras)
    parts = ", ".join(f"{k.removesuffix('_seconds')} {v:.0f} s" for k, v in record.items() if k.endswith("seconds"))
    print(f"{IMAGE} for {USER}: {parts}; {record['image_bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
