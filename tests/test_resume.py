"""Resuming an interrupted book build, and the determinism of what it computes.

A tiny book - two chapters that score the embedded data sets - is built by ``medlit book`` (what ``make book``
runs) in a copy of the project, with the smoke profile. The first build is killed with SIGKILL (its process group;
the chapter's kernel, which runs in a session of its own, must end with it) in the middle of its second chapter,
right after that chapter wrote its first cube; the second build must reuse every model, cube and chapter finished
before the kill, byte for byte, and complete the book. A second, uninterrupted computation of the same cube in
another results folder, by the same code and seed, must then be identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medlit.paths import PACKAGE_DIR

METHODS = ["gradcam", "centre_prior"]
TIMING_FILES = ("timing.json", "models.timing", "00_first.timing", "10_second.timing")
BUILD_TIMEOUT_S = 420

TOC = """format: jb-book
root: book/intro
chapters:
  - file: chapters/00_first
  - file: chapters/10_second
"""
CONFIG = """title: resume test
only_build_toc_files: true
exclude_patterns: [_build, results, medlit]
execute:
  execute_notebooks: "off"
"""


def notebook(*cells: str) -> str:
    """A chapter: a papermill parameters cell, then ``cells``."""
    parameters = 'profile = "smoke"\nreal_data = ""\ndevice = "cpu"'
    code = [{"cell_type": "code", "execution_count": None, "metadata": {"tags": ["parameters"]}, "outputs": [],
             "source": parameters}]
    code += [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": c} for c in cells]
    return json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# A chapter"}, *code],
                       "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                   "language": "python"}},
                       "nbformat": 4, "nbformat_minor": 5})


SCORE = ("from medlit.benchmark import prepare, run_methods\n"
         "def score(dataset, chapter):\n"
         "    prepared = prepare(profile, dataset, device=device, progress=False)\n"
         f"    return run_methods(prepared, {METHODS!r}, chapter=chapter, progress=False)")
FIRST = notebook(SCORE, 'print(score("cxr-phantom", "00_first").sizes["sample"])')
# While the file HOLD exists (the test makes it for the first build), the chapter waits between its two cubes;
# its kernel's process id is left in KERNEL_PID, so that the test can see the kernel go with the build.
HOLD = ("import os, time\nfrom pathlib import Path\nPath('../KERNEL_PID.tmp').write_text(str(os.getpid()))\n"
        "os.replace('../KERNEL_PID.tmp', '../KERNEL_PID')\n"
        "while Path('../HOLD').exists():\n    time.sleep(0.05)")
SECOND = notebook(SCORE, 'print(score("cxr-phantom", "10_second").sizes["sample"])', HOLD,
                  'print(score("fundus-lesions", "10_second").sizes["sample"])')


def make_project(root: Path) -> Path:
    """A copy of the package with a two-chapter book around it (``project_root()`` resolves to it there)."""
    shutil.copytree(PACKAGE_DIR, root / "medlit", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "_toc.yml").write_text(TOC)
    (root / "_config.yml").write_text(CONFIG)
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Resume test\n\nTwo chapters.\n")
    (root / "chapters").mkdir()
    (root / "chapters" / "00_first.ipynb").write_text(FIRST)
    (root / "chapters" / "10_second.ipynb").write_text(SECOND)
    return root


def book_command(project: Path) -> tuple[list[str], dict]:
    env = {**os.environ, "PYTHONPATH": str(project), "MEDLIT_RESULTS": str(project / "results"),
           "MEDLIT_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "-m", "medlit.cli", "book", "--profile", "smoke", "--device", "cpu"], env


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def snapshot(project: Path) -> dict:
    """Every finished product: path -> (mtime_ns, sha256): models, cubes, executed chapters and their stamps (not
    the build's timing report, which every build rewrites)."""
    found = {}
    for folder in (project / "results", project / "_build" / "executed"):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and ".failed." not in path.name and not path.name.startswith(TIMING_FILES):
                found[str(path.relative_to(project))] = (path.stat().st_mtime_ns,
                                                         hashlib.sha256(path.read_bytes()).hexdigest())
    return found


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> dict:
    project = make_project(tmp_path_factory.mktemp("project"))
    command, env = book_command(project)
    cubes = project / "results" / "smoke" / "cubes"
    mid_chapter = cubes / "10_second--cxr-phantom--resnet10.nc"
    holding = project / "KERNEL_PID"  # written once the second chapter has its first cube and waits
    (project / "HOLD").touch()
    log = (project / "first.log").open("w")
    first = subprocess.Popen(command, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        while not holding.is_file():
            if first.poll() is not None:
                pytest.fail(f"the first build ended (exit {first.returncode}) before the kill:\n"
                            f"{(project / 'first.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the second chapter did not reach its pause in {BUILD_TIMEOUT_S} s")
            time.sleep(0.05)
        assert mid_chapter.is_file()
        before_kill = snapshot(project)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)  # the build: the process group this test started
        first.wait()
        log.close()
    assert first.returncode == -signal.SIGKILL
    # The chapter's kernel runs in a session of its own and ends when it sees its parent gone (ipykernel's parent
    # poller); it must be gone before the HOLD is lifted, or it would go on computing beside the next build.
    kernel = int(holding.read_text())
    deadline = time.monotonic() + 30
    while alive(kernel) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(kernel):
        os.kill(kernel, signal.SIGKILL)  # a kernel this test's build started
        pytest.fail(f"the chapter kernel {kernel} outlived the killed build by 30 s")
    (project / "HOLD").unlink()
    after_kill = snapshot(project)
    second = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return {"project": project, "before_kill": before_kill, "after_kill": after_kill, "final": snapshot(project),
            "log": second.stdout}


def test_an_interrupted_build_resumes_without_redoing_or_losing_anything(resumed):
    project, after_kill, final = resumed["project"], resumed["after_kill"], resumed["final"]
    # what was finished at the kill: both models, the first chapter and its cube, the second chapter's first cube
    names = {Path(p).name for p in after_kill}
    assert sum(n.endswith(".safetensors") for n in names) == 2 and sum(n.endswith(".json") for n in names) == 2
    assert {"00_first--cxr-phantom--resnet10.nc", "10_second--cxr-phantom--resnet10.nc", "00_first.ipynb",
            "00_first.stamp"} <= names
    assert "10_second.ipynb" not in names and "10_second--fundus-lesions--resnet10.nc" not in names
    assert after_kill == resumed["before_kill"], "the kill changed a finished file"
    # the second build reused every one of them, byte for byte and without rewriting it
    assert {p: final.get(p) for p in after_kill} == after_kill
    assert "00_first: up to date, reused" in resumed["log"]
    assert "10_second: executed" in resumed["log"]
    # and finished the rest
    new = {Path(p).name for p in set(final) - set(after_kill)}
    shards = {name for name in new if name.startswith("fundus-lesions--resnet10--")}  # one score shard per method
    assert sorted(name.split("--")[2] for name in shards) == sorted(METHODS)
    assert new - shards == {"10_second--fundus-lesions--resnet10.nc", "10_second.ipynb", "10_second.stamp"}
    assert not list((project / "_build" / "executed").rglob("*.failed.ipynb"))
    assert not [p for p in (project / "results").rglob("*") if ".tmp" in p.name]
    assert (project / "_build" / "html" / "index.html").is_file()
    # the timing report of the resumed build: the reused chapter took no phase time, the other scored and explained
    steps = {row["step"]: row for row in json.loads(
        (project / "_build" / "executed" / "smoke" / "timing.json").read_text())["steps"]}
    assert list(steps) == ["models", "00_first", "10_second", "jupyter-book", "total"]
    assert steps["00_first"]["reused"] and not steps["10_second"]["reused"]
    assert steps["10_second"]["scoring"] > 0 and steps["10_second"]["explaining"] > 0
    assert steps["10_second"]["scoring"] + steps["10_second"]["explaining"] < steps["10_second"]["seconds"]


def test_the_same_seed_gives_identical_cubes(resumed, tmp_path):
    """The resumed build's cube (computed in a chapter's kernel) and a fresh one in another results folder (the
    model trained again from scratch, by the same code) are identical: scores and every per-sample coordinate."""
    import xarray as xr

    from medlit.cube import read_cube

    project = resumed["project"]
    _, env = book_command(project)
    env["MEDLIT_RESULTS"] = str(tmp_path / "results")
    script = ("from medlit.benchmark import prepare, run_methods\n"
              "prepared = prepare('smoke', 'fundus-lesions', device='cpu', progress=False)\n"
              f"run_methods(prepared, {METHODS!r}, chapter='10_second', progress=False)")
    fresh_run = subprocess.run([sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True,
                               timeout=BUILD_TIMEOUT_S)
    assert fresh_run.returncode == 0, fresh_run.stderr[-3000:]
    name = "10_second--fundus-lesions--resnet10.nc"
    fresh = read_cube(tmp_path / "results" / "smoke" / "cubes" / name)
    built = read_cube(project / "results" / "smoke" / "cubes" / name)
    xr.testing.assert_identical(fresh.score, built.score)
    for coord in ("sample_id", "label", "finding", "box_area_fraction", "probability", "correct"):
        xr.testing.assert_identical(fresh[coord], built[coord])
    assert fresh.attrs["cache_key"] == built.attrs["cache_key"]
