"""Where medlit keeps what it computes: models, cubes, executed chapters."""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The repository root (the folder holding ``_toc.yml``), found from the package or the working directory."""
    for start in (PACKAGE_DIR.parent, Path.cwd()):
        for folder in (start, *start.parents):
            if (folder / "_toc.yml").is_file() and (folder / "medlit").is_dir():
                return folder
    return Path.cwd()


def results_dir() -> Path:
    """Root of all results: ``$MEDLIT_RESULTS`` if set, else ``<project root>/results``."""
    env = os.environ.get("MEDLIT_RESULTS")
    return Path(env).expanduser().resolve() if env else project_root() / "results"


def models_dir() -> Path:
    return results_dir() / "models"


def cubes_dir(profile: str) -> Path:
    return results_dir() / profile / "cubes"


def checks_dir(profile: str) -> Path:
    """Results of checks that are not per-image scores (e.g. randomisation sanity checks)."""
    return results_dir() / profile / "checks"


def source_hash(*subpackages: str) -> str:
    """A short hash of medlit's own source files (all of them, or the named subpackages/modules).

    Caches key on it, so that a change of code invalidates the models and cubes the code produced.
    """
    digest = hashlib.sha256()
    targets = [PACKAGE_DIR / name for name in subpackages] if subpackages else [PACKAGE_DIR]
    files = []
    for target in targets:
        if target.is_dir():
            files.extend(sorted(target.rglob("*.py")))
        elif target.with_suffix(".py").is_file():
            files.append(target.with_suffix(".py"))
    for path in files:
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _module_file(module: str, package_dir: Path, package: str) -> Path | None:
    """The source file of ``package.a.b`` (``a/b.py`` or ``a/b/__init__.py``), or None outside the package."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str, package: str) -> set[str]:
    """Every ``package`` module that ``path`` imports anywhere (lazy imports inside functions included).

    ``from package.a import b`` names both ``package.a`` and, if it is a module, ``package.a.b``.
    """
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == package or name.startswith(package + ".")}


def import_closure(*modules: str, package_dir: Path = PACKAGE_DIR, package: str = "medlit") -> list[Path]:
    """The source files of ``modules`` and of every module of ``package`` they import, transitively.

    A static reading of the import statements (nothing is executed), including imports inside functions and
    the ``__init__`` of every package on the way. Sorted, for hashing.
    """
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, package_dir, package)
        if path is None:
            continue
        seen[name] = path
        parents = [".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))]
        todo.extend(parents + sorted(_imported_modules(path, name, package)))
    return sorted(set(seen.values()))


def code_hash(*modules: str, package_dir: Path = PACKAGE_DIR, package: str = "medlit") -> str:
    """A short hash of the source of ``modules`` and everything of ``package`` they import (``import_closure``).

    Cache keys use it: a change to any code that ran invalidates the result, a change elsewhere (plots, tables,
    the command line) keeps it.
    """
    digest = hashlib.sha256()
    for path in import_closure(*modules, package_dir=package_dir, package=package):
        digest.update(str(path.relative_to(package_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
