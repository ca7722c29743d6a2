"""Cache keys hash the code that actually ran: the modules a result's code imports, and nothing else."""

from __future__ import annotations

import shutil

from medlit.paths import PACKAGE_DIR, code_hash, import_closure


def test_the_closure_follows_imports_including_lazy_ones(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    (pkg / "score.py").write_text("import os\n\ndef f():\n    from pkg import helper\n    from .sub import leaf\n")
    (pkg / "helper.py").write_text("Y = 2\n")
    (pkg / "plot.py").write_text("from pkg import score\n")
    names = {p.relative_to(pkg).as_posix() for p in import_closure("pkg.score", package_dir=pkg, package="pkg")}
    assert names == {"__init__.py", "score.py", "helper.py", "sub/__init__.py", "sub/leaf.py"}
    before = code_hash("pkg.score", package_dir=pkg, package="pkg")
    (pkg / "plot.py").write_text("from pkg import score\n# a new colour scheme\n")
    assert code_hash("pkg.score", package_dir=pkg, package="pkg") == before, "plotting code is not scoring code"
    (pkg / "helper.py").write_text("Y = 3\n")
    assert code_hash("pkg.score", package_dir=pkg, package="pkg") != before, "an imported helper changed"


def test_editing_a_helper_the_scoring_path_imports_invalidates_cubes_and_editing_plots_does_not(tmp_path):
    """On a copy of medlit itself: ``medlit.studies.jacobian_stability``'s helpers reach the scoring path through
    ``explain/jacobian.py`` -> ``models/capture.py``; the charts in ``viz.py`` do not."""
    from medlit.benchmark import SCORING_MODULES

    copy = tmp_path / "medlit"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    key = code_hash(*SCORING_MODULES, package_dir=copy)
    assert key == code_hash(*SCORING_MODULES), "the copy hashes like the package"
    files = {p.relative_to(copy).as_posix() for p in import_closure(*SCORING_MODULES, package_dir=copy)}
    assert {"models/capture.py", "explain/jacobian.py", "metrics/faithfulness.py", "perturbation.py"} <= files
    assert not {"viz.py", "summary.py", "cli.py", "book.py"} & files
    with open(copy / "viz.py", "a") as f:
        f.write("\n# plotting only\n")
    assert code_hash(*SCORING_MODULES, package_dir=copy) == key
    with open(copy / "models" / "capture.py", "a") as f:
        f.write("\n# a changed helper\n")
    assert code_hash(*SCORING_MODULES, package_dir=copy) != key


def test_a_study_key_covers_its_own_module():
    files = {p.relative_to(PACKAGE_DIR).as_posix() for p in import_closure("medlit.studies.randomisation")}
    assert "studies/randomisation.py" in files and "studies/cache.py" in files
