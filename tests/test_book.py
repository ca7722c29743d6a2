"""The book's orchestration: chapter discovery, every chapter's parameters cell, the CLI."""

from __future__ import annotations

import json

from medlit.book import chapters
from medlit.cli import main
from medlit.paths import project_root


def test_chapters_follow_the_toc_and_have_a_parameters_cell():
    found = chapters()
    names = [c.name for c in found]
    assert names == sorted(names) and names[0].startswith("00_") and names[-1].endswith("comparison")
    for chapter in found:
        nb = json.loads(chapter.source.read_text())
        tags = [t for cell in nb["cells"] for t in cell.get("metadata", {}).get("tags", [])]
        assert tags.count("parameters") == 1, chapter.name
        checked = [c for c in nb["cells"] if "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
        assert checked and all(c.get("outputs") for c in checked), f"{chapter.name}: no checked output stored"
        assert all(not c.get("outputs") for c in nb["cells"] if c not in checked), f"{chapter.name}: stray outputs"
    assert [c.reads_cubes for c in found] == [False] * (len(found) - 1) + [True]


def test_every_toc_file_exists():
    import yaml

    from medlit.book import _toc_files

    toc = yaml.safe_load((project_root() / "_toc.yml").read_text())
    for entry in [toc["root"], *_toc_files(toc)]:
        assert any((project_root() / (entry + ext)).is_file() for ext in ("", ".md", ".ipynb")), entry


def test_cli_lists_the_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "gradcam" in out and "pointing_game" in out and "cxr-phantom" in out
