"""Writing LaTeX and compiling it: escaping text, the TeX Live packages the paper needs, and ``main.pdf`` from
``main.tex`` with latexmk (BibTeX included), reproducibly (``SOURCE_DATE_EPOCH``: the same sources give the same
bytes).

The paper uses only the base and recommended LaTeX packages of TeX Live (article, geometry, booktabs, graphicx,
natbib with plainnat, microtype) and the Computer Modern Type 1 fonts that come with them: Debian's
``texlive-latex-base``, ``texlive-latex-recommended`` and ``latexmk`` (:data:`APT_PACKAGES`, installed without
their recommendations: about 160 MB; BibTeX comes with them). ``make install`` installs them where it installs
Graphviz.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from segzoo.errors import SegzooError

APT_PACKAGES = "texlive-latex-base texlive-latex-recommended latexmk"
TEX_INSTALL = (f"install TeX to compile it: Debian/Ubuntu `apt-get install --no-install-recommends {APT_PACKAGES}`, "
               "macOS `brew install --cask mactex-no-gui`; then run `latexmk -pdf main.tex` in {folder}")
_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}",
            "<": r"\textless{}", ">": r"\textgreater{}"}
_UNICODE = {"×": r"$\times$", "−": "-", "Δ": r"$\Delta$", "≥": r"$\geq$", "≤": r"$\leq$", "±": r"$\pm$",
            "α": r"$\alpha$", "∩": r"$\cap$", "∪": r"$\cup$", "→": r"$\to$", "·": r"$\cdot$", "…": "...",
            "²": r"$^2$", "³": r"$^3$", "µ": r"$\mu$", "–": "--", "—": "---", "°": r"$^\circ$",
            "ä": r"\"a", "ö": r"\"o", "ü": r"\"u", "é": r"\'e"}
_AUX = ("aux", "log", "fls", "fdb_latexmk", "out", "blg")  # what a compile leaves besides the PDF and .bbl


def tex(text: object) -> str:
    """``text`` with LaTeX's special characters escaped (and a few Unicode signs written the TeX way)."""
    return "".join(_SPECIAL.get(c, _UNICODE.get(c, c)) for c in str(text))


def breakable(name: object) -> str:
    """An identifier (``Dataset001_SpinalPhantom``) escaped, with a line break allowed after each underscore."""
    return tex(name).replace(r"\_", r"\_\allowbreak{}")


def compile_pdf(folder: Path) -> bool:
    """``main.pdf`` from ``main.tex`` (and ``references.bib``) with latexmk, else pdflatex and BibTeX; False when TeX
    is not installed. Raises :class:`SegzooError` naming the first TeX errors when it fails."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}  # reproducible PDF bytes
    pdflatex = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"]
    if shutil.which("latexmk"):
        commands = [["latexmk", "-pdf", "-bibtex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"]]
    elif shutil.which("pdflatex") and shutil.which("bibtex"):
        commands = [pdflatex, ["bibtex", "main"], pdflatex, pdflatex]
    else:
        print("main.pdf not made: " + TEX_INSTALL.format(folder="the paper folder"))
        return False
    for command in commands:
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        if result.returncode:
            log = (folder / "main.log").read_text(errors="replace") if (folder / "main.log").is_file() else ""
            errors = [line for line in log.splitlines() if line.startswith("!")][:5]
            raise SegzooError(f"{folder.name}/main.tex: {command[0]} failed: " + ("; ".join(errors) or
                                                                                   result.stdout[-500:]))
    log = (folder / "main.log").read_text(errors="replace")
    unresolved = [line for line in log.splitlines() if "undefined" in line and ("Citation" in line or
                                                                                 "Reference" in line)]
    if unresolved:
        raise SegzooError(f"{folder.name}/main.tex: unresolved after compiling: {'; '.join(unresolved[:3])}")
    for aux in folder.iterdir():  # keep the sources, the bibliography as BibTeX wrote it and the PDF
        if aux.suffix[1:] in _AUX:
            aux.unlink()
    return (folder / "main.pdf").is_file()

