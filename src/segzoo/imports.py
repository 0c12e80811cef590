"""Which segzoo code a command runs, read from the source: a static walk of its import statements.

Snakemake reruns a job when one of its inputs is newer than its outputs, and DVC when one has changed. A rule's
code inputs are the source files of every segzoo module its verb reaches: the verb's handler, what the handler
imports, and transitively what those modules import, at module level or inside functions (a module's function
may run; an import inside it is code the job can execute). Nothing here is listed by hand but
:data:`NO_RERUN`, the modules that by design cannot change a result. The command-line package is a dispatcher:
of its modules only the verb's own stage module and its handler count (the other verbs never run).

The same walk serves ``tests/test_structure.py``, which checks that the package has no import circle and no
import from a lower layer to a higher one.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from pathlib import Path

PACKAGE = "segzoo"
SRC = Path(__file__).resolve().parent  # the package folder this copy of segzoo was imported from
DISPATCH = "segzoo.cli"  # parses the command line and calls one verb's handler

NO_RERUN = {  # module -> why an edit to it cannot change any job's results
    "segzoo.tracking": "copies what a run did to W&B and MLflow beside its outputs; with tracking on and off the "
                       "checkpoints are byte-identical (tests/test_tracking.py), and switching it reruns nothing",
    DISPATCH: "parses the command line and calls the verb's handler; each verb's options and handler live in its "
              "stage module (segzoo.cli.<stage>), which counts",
}


def modules(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package under ``root``: ``{"segzoo.data.splits": <root>/data/splits.py, ...}``
    (a package is its ``__init__.py``)."""
    return dict(_modules(Path(root)))


@functools.lru_cache(maxsize=None)
def _modules(root: Path) -> tuple:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return tuple(found.items())


def imported_by(node: ast.AST, known: dict, parents: bool = True) -> set[str]:
    """The segzoo modules that the import statements anywhere inside ``node`` name (``from segzoo.x import y`` is
    module ``segzoo.x.y`` when there is one, else ``segzoo.x``), and with ``parents`` the packages above them
    (whose ``__init__`` runs first)."""
    names = set()
    for item in _statements(node):
        if isinstance(item, ast.Import):
            names.update(alias.name for alias in item.names)
        elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
            for alias in item.names:
                full = f"{item.module}.{alias.name}"
                names.add(full if full in known else item.module)
    found = set()
    for name in names:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            parts = name.split(".")
            first = 1 if parents else len(parts)
            found.update(".".join(parts[:i]) for i in range(first, len(parts) + 1) if ".".join(parts[:i]) in known)
    return found


def _statements(node: ast.AST):
    """Every statement inside ``node`` (imports are statements: expressions need not be visited)."""
    stack = [node]
    while stack:
        item = stack.pop()
        yield item
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(item, field, None)
            if isinstance(children, list):
                stack.extend(children)


def module_imports(module: str, known: dict[str, Path], *, top_level: bool = False, parents: bool = True) -> set[str]:
    """What ``module`` imports: everywhere in it, or (``top_level``) only what runs when it is imported; with
    ``parents``, the packages above each imported module too."""
    path = known[module]
    stat = path.stat()
    return set(_imports(str(path), stat.st_mtime_ns, stat.st_size, module, top_level, parents, tuple(sorted(known))))


@functools.lru_cache(maxsize=None)
def _imports(path: str, mtime_ns: int, size: int, module: str, top_level: bool, parents: bool,
             names: tuple) -> frozenset:
    """Parsed once per file version: the workflow asks for every rule's code when it loads."""
    known = dict.fromkeys(names)
    tree = ast.parse(Path(path).read_text(), filename=path)
    if top_level:
        tree = ast.Module(body=[n for n in tree.body
                                if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))],
                          type_ignores=[])
    return frozenset(imported_by(tree, known, parents) - {module})


def graph(root: Path = SRC) -> dict[str, set[str]]:
    """Every module and the modules its import statements name (function-level imports included; the packages
    Python imports on the way are not edges)."""
    known = modules(root)
    return {m: module_imports(m, known, parents=False) for m in known}


def verb_modules(function: Callable, root: Path = SRC) -> set[str]:
    """The modules a verb's handler ``function`` reaches: its stage module with the packages above it and what
    runs when it is imported, the imports in the handler's body, and everything those reach (the dispatcher's
    own imports, every stage, are not followed)."""
    known = modules(root)
    own = function.__module__
    tree = ast.parse(known[own].read_text())
    body = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function.__name__)
    parts = own.split(".")
    seen = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    todo = (module_imports(own, known, top_level=True) | imported_by(body, known)) - seen
    while todo:
        module = todo.pop()
        seen.add(module)
        todo |= module_imports(module, known) - seen - {DISPATCH}
    return seen


def verb_sources(function: Callable, root: Path = SRC) -> list[Path]:
    """The source files whose edit must rerun a job of the verb that ``function`` handles (sorted), without the
    modules of :data:`NO_RERUN`."""
    known = modules(root)
    return sorted(known[m] for m in verb_modules(function, root) if m not in NO_RERUN)
