"""Which of the package's source files a script or module runs, and a digest of them.

A stage's output is a function of the code it runs, so dvc.yaml must list every heartsound module a stage
imports, directly or through other modules (tests/test_stage_deps.py checks it), and the per-recording
feature cache keys its entries by the digest of the feature code. Imports are read with ast, function-level
ones included: a lazy import still runs when the function does. The one exception is a module's PEP 562
`__getattr__` (the package's lazy `heartsound.predict`): it runs only when that attribute is asked for.
Data files a module reads beside itself, written `Path(__file__).with_name("name")` (the segmenter's fitted
parameters), count as its code too.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "heartsound"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(name: str) -> Path | None:
    """Source file of a heartsound module or package by dotted name, or None if there is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    relative = path.resolve().relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _imported_names(path: Path) -> set[str]:
    """Dotted names of the heartsound modules a file imports (`from heartsound import x` counts x if a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    here = _module_name(path) if path.is_relative_to(PACKAGE_DIR) else ""
    lazy_attributes = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
    skipped = {id(inner) for node in lazy_attributes for inner in ast.walk(node)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import, resolved against this module's package
                package = here.split(".") if is_package else here.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(filter(None, [*package, base]))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] == PACKAGE}


def _data_files(path: Path) -> set[Path]:
    """Files a module names as `Path(__file__).with_name("literal")` that exist beside it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "with_name"
            and "__file__" in ast.unparse(node.func.value)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            candidate = path.resolve().with_name(node.args[0].value)
            if candidate.is_file():
                found.add(candidate)
    return found


def _with_parents(name: str) -> list[str]:
    """A module and the packages Python runs first to import it: heartsound.a.b -> heartsound, heartsound.a, ..."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_files(path: str | Path) -> set[Path]:
    """Every heartsound source file that running path (a script or a module file) imports, transitively.

    Package __init__ files count: Python runs them before any of their modules, and so do the data files a
    module reads beside itself. path itself is included when it is part of the package.
    """
    start = Path(path).resolve()
    seen: set[Path] = set()
    todo = [start]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in _imported_names(current):
            for module in _with_parents(name):
                source = module_file(module)
                if source is not None and source not in seen:
                    todo.append(source)
    if not start.is_relative_to(PACKAGE_DIR):
        seen.discard(start)
    return seen | {data for source in seen for data in _data_files(source)}


@functools.lru_cache(maxsize=8)
def source_digest(module: str) -> str:
    """sha256 over the source of a heartsound module and everything it imports (paths and contents, sorted)."""
    digest = hashlib.sha256()
    for source in sorted(imported_files(module_file(module)), key=lambda p: p.relative_to(PACKAGE_DIR).as_posix()):
        digest.update(source.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        digest.update(source.read_bytes() + b"\0")
    return digest.hexdigest()
