"""Where medlit keeps what it computes: models, cubes, executed chapters."""

from __future__ import annotations

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
