"""Writing outputs all-or-nothing, and never over something that is already there."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segzoo.errors import SegzooError


def default_mode(directory: bool) -> int:
    """The permissions a plain open()/mkdir() would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def refuse_existing(path: Path) -> None:
    """Fail if ``path`` holds anything: segzoo never overwrites what is there.

    An empty directory is allowed (Snakemake and users often create the parent first).
    """
    if path.is_dir() and not any(path.iterdir()):
        return
    if path.exists() or path.is_symlink():
        raise SegzooError(f"{path}: already exists; refusing to overwrite it (remove it or choose another output path)")


@contextmanager
def output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary directory next to ``path``; rename it to ``path`` only on success.

    On any exception the temporary directory is removed, so a failed command leaves nothing behind.
    """
    with _staged(Path(path), directory=True, overwrite=False) as tmp:
        yield tmp


@contextmanager
def output_file(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary file next to ``path`` to write; rename it over ``path`` only on success (refusing
    an existing ``path`` unless ``overwrite``). On any exception the temporary file is removed."""
    with _staged(Path(path), directory=False, overwrite=overwrite) as tmp:
        yield tmp


@contextmanager
def _staged(path: Path, *, directory: bool, overwrite: bool) -> Iterator[Path]:
    """The one way segzoo writes an output: into a hidden sibling, renamed into place when complete."""
    if not overwrite:
        refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        os.chmod(tmp, default_mode(directory=directory))
        yield tmp
        if directory:
            if path.is_dir():
                path.rmdir()  # empty, checked above
            tmp.rename(path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@contextmanager
def new_files(*paths: str | os.PathLike) -> Iterator[None]:
    """A command that writes several outputs (files or folders): refuse any that exist, and remove all of them
    if it fails midway."""
    paths = [Path(p) for p in paths]
    for path in paths:
        refuse_existing(path)
    try:
        yield
    except BaseException:
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_file() or path.is_symlink():
                path.unlink()
        raise


def read_json(path: str | os.PathLike):
    """Parse a JSON file; a missing or malformed file is a SegzooError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SegzooError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SegzooError(f"{path}: not valid JSON ({e})") from None


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> None:
    """Write ``text`` atomically (temporary file + rename); refuse an existing file unless ``overwrite``."""
    with output_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)


def save_figure(fig, png: str | os.PathLike, dpi: int = 100) -> Path:
    """A matplotlib figure as a PNG (laid out tightly) and the same as a PDF beside it (vector, for papers; no
    creation date, so reruns write the same bytes), then closed. Returns the PNG's path."""
    import matplotlib.pyplot as plt

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(png, dpi=dpi)
    fig.savefig(png.with_suffix(".pdf"), metadata={"CreationDate": None})
    plt.close(fig)
    return png


def write_json(path: str | os.PathLike, obj, *, overwrite: bool = False) -> None:
    """Write ``obj`` as indented JSON atomically (temporary file + rename)."""
    write_text(path, json.dumps(obj, indent=2) + "\n", overwrite=overwrite)
