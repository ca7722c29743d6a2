"""Building the book: train/load models, execute chapters with papermill, run jupyter-book.

Chapters are the notebooks listed in ``_toc.yml``, executed in table-of-contents order with the profile
injected. An executed chapter is reused while its stamp (notebook source, profile, medlit source code and,
for chapters that read other chapters' cubes, those cubes) is unchanged. The book is built from a staging
folder (``_build/stage``) holding the front matter and the executed notebooks, so the notebooks in
``chapters/`` stay clean sources.

Each build writes ``_build/executed/<profile>/timing.json``: the wall time of the model preparation, of every
chapter (with its kernel's seconds per phase, :mod:`medlit.timing`) and of jupyter-book; ``scripts/profile_book.py``
prints it as a table.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from medlit.paths import atomic_write_bytes, cubes_dir, project_root, source_hash
from medlit.timing import LOG_ENV, read_log

STAGED_FILES = ("_config.yml", "_toc.yml")
STAGED_DIRS = ("book", "data_cards")
# The parts of MathJax's es5 distribution the pages use: the TeX-to-HTML bundle and what it loads on demand.
MATHJAX_PARTS = ("tex-chtml.js", "a11y", "adaptors", "input", "output", "sre", "ui")


def mathjax_dir() -> Path:
    """MathJax's es5 folder: ``$MEDLIT_MATHJAX``, else where ``make`` installs it (``.venv/mathjax``)."""
    import os

    env = os.environ.get("MEDLIT_MATHJAX")
    return Path(env) if env else Path(sys.prefix) / "mathjax" / "node_modules" / "mathjax" / "es5"


def _mathjax_files() -> dict[Path, Path]:
    """Staged path (under ``_mathjax/mathjax``, published as ``mathjax/``) -> source, for ``MATHJAX_PARTS``."""
    source = mathjax_dir()
    if not (source / "tex-chtml.js").is_file():
        raise RuntimeError(f"MathJax is not installed at {source}: run `make book` (it installs it), or "
                           f"`npm install --prefix {Path(sys.prefix) / 'mathjax'} mathjax@3.2.2`, or set "
                           "MEDLIT_MATHJAX to a MathJax 3 es5 folder. The book ships its maths renderer so that "
                           "pages render offline.")
    files = {}
    for part in MATHJAX_PARTS:
        path = source / part
        for src in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            files[Path("_mathjax") / "mathjax" / src.relative_to(source)] = src
    return files


@dataclass(frozen=True)
class Chapter:
    name: str  # file stem, e.g. "10_gradient_activation"
    source: Path
    reads_cubes: bool  # notebook metadata medlit.reads_cubes: it depends on every chapter's cube


def _toc_files(node) -> list[str]:
    found = []
    if isinstance(node, dict):
        if "file" in node:
            found.append(node["file"])
        for value in node.values():
            found.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_toc_files(item))
    return found


def chapters(root: Path | None = None) -> list[Chapter]:
    """The executable chapters (``chapters/*.ipynb`` named in ``_toc.yml``), in book order."""
    root = root or project_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    found = []
    for entry in _toc_files(toc):
        path = root / (entry if entry.endswith(".ipynb") else entry + ".ipynb")
        if path.parent.name == "chapters" and path.is_file():
            meta = json.loads(path.read_text()).get("metadata", {}).get("medlit", {})
            found.append(Chapter(path.stem, path, bool(meta.get("reads_cubes", False))))
    return found


def _stamp(chapter: Chapter, profile: str, data: str = "", device: str = "cpu") -> str:
    from medlit.benchmark import chapter_datasets
    from medlit.data import DATASETS

    digest = hashlib.sha256(chapter.source.read_bytes())
    digest.update(profile.encode())
    digest.update(device.encode())
    digest.update(source_hash().encode())
    for name in chapter_datasets(data):  # real data: a change of the user's files re-runs the chapter
        digest.update(f"{name}:{DATASETS[name].fingerprint}".encode())
    if chapter.reads_cubes:
        for cube in sorted(cubes_dir(profile).glob("*.nc")):
            digest.update(cube.name.encode())
            digest.update(hashlib.sha256(cube.read_bytes()).digest())
    return digest.hexdigest()[:16]


def executed_dir(profile: str) -> Path:
    return project_root() / "_build" / "executed" / profile


def execute_chapter(chapter: Chapter, profile: str, *, data: str = "", force: bool = False,
                    device: str | None = None, log=print) -> Path:
    """Run one chapter with papermill unless its executed copy is up to date; returns the executed notebook.

    ``data`` names real data sets to score beside the embedded ones (``adapter=folder``, comma-separated); it is
    injected into the chapter as its ``real_data`` parameter. ``device`` (``auto``/``cpu``/``cuda``; None reads
    ``$MEDLIT_DEVICE``) is resolved here and injected as the ``device`` parameter. The stamp includes the device
    type, so a chapter executed on a GPU is not taken for the CPU's.
    """
    from medlit.device import resolve_device

    device = resolve_device(device).type
    import papermill

    out = executed_dir(profile) / f"{chapter.name}.ipynb"
    stamp_file = out.with_suffix(".stamp")
    stamp = _stamp(chapter, profile, data, device)
    if not force and _stamped(out, stamp):
        log(f"  {chapter.name}: up to date, reused")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = out.with_name(f"{chapter.name}.failed.ipynb")
    timing_log = timing_log_path(profile, chapter.name)
    timing_log.unlink(missing_ok=True)
    os.environ[LOG_ENV] = str(timing_log)  # the chapter's kernel inherits it and logs its phases there
    started = time.perf_counter()
    try:
        papermill.execute_notebook(str(chapter.source), str(failed), parameters={"profile": profile,
                                                                                "real_data": data,
                                                                                "device": device},
                                   cwd=str(chapter.source.parent), kernel_name="python3", progress_bar=False)
    except Exception as err:
        raise RuntimeError(f"chapter {chapter.source} failed under profile {profile!r}: {err}\n"
                           f"The partly executed notebook is {failed}; chapters executed before it are kept."
                           ) from err
    finally:
        os.environ.pop(LOG_ENV, None)
    _hide_default_parameters(failed)
    failed.replace(out)
    stamp_file.write_text(stamp)
    log(f"  {chapter.name}: executed in {time.perf_counter() - started:.0f} s")
    return out


def _hide_default_parameters(path: Path) -> None:
    """In the executed copy, hide the default ``parameters`` cell: the injected one says what was run."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
        elif "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "remove-output"]
    nbformat.write(nb, path)


def _sync_file(src: Path, dst: Path) -> None:
    """Copy only when the content differs, so that Sphinx's incremental build sees unchanged files as such."""
    if dst.is_file() and dst.read_bytes() == src.read_bytes():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


HEADLINE = "_headline.md"  # included by book/intro.md


def write_headline(profile: str, data: str = "") -> Path:
    """``_build/generated/_headline.md``: the landing page's headline results, computed from this run's cubes
    (``medlit.summary.headline``), or a note that the chapters have not run yet."""
    from medlit.benchmark import chapter_cube_paths
    from medlit.cube import merge_cubes, read_cube
    from medlit.summary import headline

    paths = chapter_cube_paths(profile, data)
    text = (f"Profile `{profile}`, computed from {len(paths)} result cubes:\n\n"
            + headline(merge_cubes([read_cube(p) for p in paths])) if paths
            else "No results yet: the method chapters have not run.")
    out = project_root() / "_build" / "generated" / HEADLINE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return out


def stage(profile: str, executed: list[Path], headline: Path | None = None) -> Path:
    """Assemble ``_build/stage``: config, toc, front matter, the executed chapters, the landing page's headline
    (``write_headline``) and MathJax."""
    root = project_root()
    stage_dir = root / "_build" / "stage"
    wanted = {stage_dir / "book" / HEADLINE: headline or write_headline(profile)}
    for name in STAGED_FILES:
        wanted[stage_dir / name] = root / name
    for folder in STAGED_DIRS:
        for src in (root / folder).rglob("*"):
            if src.is_file():
                wanted[stage_dir / src.relative_to(root)] = src
    for nb in executed:
        wanted[stage_dir / "chapters" / nb.name] = nb
    for dst, src in _mathjax_files().items():
        wanted[stage_dir / dst] = src
    for dst, src in wanted.items():
        _sync_file(src, dst)
    for stale in [p for p in stage_dir.rglob("*") if p.is_file() and p not in wanted]:
        stale.unlink()
    return stage_dir


def run_jupyter_book(stage_dir: Path) -> Path:
    """``jupyter-book build -W -n --keep-going``: warnings fail the build; the HTML lands in ``_build/html``."""
    root = project_root()
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(stage_dir), "--path-output", str(root),
           "-W", "-n", "--keep-going"]
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {result.returncode}); see the messages above")
    return root / "_build" / "html" / "index.html"


def is_up_to_date(chapter: Chapter, profile: str, *, data: str = "", device: str | None = None) -> bool:
    """Whether the executed copy of ``chapter`` matches its stamp (``execute_chapter`` would reuse it)."""
    from medlit.device import resolve_device

    out = executed_dir(profile) / f"{chapter.name}.ipynb"
    return _stamped(out, _stamp(chapter, profile, data, resolve_device(device).type))


def _stamped(out: Path, stamp: str) -> bool:
    """Whether the executed notebook ``out`` exists with ``stamp`` beside it."""
    stamp_file = out.with_suffix(".stamp")
    return out.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp


def timing_log_path(profile: str, name: str) -> Path:
    """The phase log (``medlit.timing``) of one chapter's last execution, or of the book's model preparation."""
    return executed_dir(profile) / f"{name}.timing.jsonl"


def write_timing(profile: str, rows: list[dict]) -> Path:
    """``_build/executed/<profile>/timing.json``: one row per step of the build (``step``, ``seconds``, whether it
    was reused, and the seconds per phase its log holds)."""
    path = executed_dir(profile) / "timing.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps({"profile": profile, "steps": rows}, indent=2).encode())
    return path


def prepare_models(profile: str, data: str, device: str) -> list[tuple[str, float, float]]:
    """Train (or load) the default model of every data set of the run: (name, test AUROC, seconds) each."""
    from medlit.benchmark import chapter_datasets, prepare

    done = []
    for dataset in chapter_datasets(data):
        t = time.perf_counter()
        prepared = prepare(profile, dataset, device=device, progress=True)
        done.append((prepared.record["name"], prepared.record["test_auroc"], time.perf_counter() - t))
    return done


def build_book(profile: str = "quick", *, force: bool = False, data: str = "", device: str | None = None,
               scheduler: str | None = None, log=print) -> Path:
    """The whole book: models, chapters, HTML. Returns the path of ``index.html``.

    ``data``: real data sets to score beside the embedded ones, e.g. ``"nih-cxr14=/data/nih"`` (see
    ``medlit.benchmark.chapter_datasets``); the files are checked before any chapter runs. ``device``:
    ``auto``/``cpu``/``cuda`` for training and explaining (None reads ``$MEDLIT_DEVICE``, default auto).
    ``scheduler``: where the chapters score their shards: in-process ("" or None, the default, unless
    ``$MEDLIT_SCHEDULER`` is set), ``local:N`` for a local Dask cluster of N workers, or a scheduler's address
    (:mod:`medlit.cluster`).
    """
    from medlit.cluster import scheduler as scheduler_context
    from medlit.cluster import scheduler_setting
    from medlit.device import resolve_device

    started = time.perf_counter()
    device = resolve_device(device).type
    scheduler = scheduler_setting(scheduler)
    log(f"medlit book, profile {profile!r}, device {device}" + (f", real data {data}" if data else "")
        + (f", shards on {scheduler}" if scheduler else ""))
    rows = []
    models_log = timing_log_path(profile, "models")
    models_log.parent.mkdir(parents=True, exist_ok=True)
    models_log.unlink(missing_ok=True)
    os.environ[LOG_ENV] = str(models_log)
    t = time.perf_counter()
    try:
        # in a process of its own: training leaves the process holding about 2 GB it no longer uses, which the
        # chapters' kernels would have to share the machine with
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            for name, auroc, seconds in pool.submit(prepare_models, profile, data, device).result():
                log(f"  model {name}: test AUROC {auroc:.3f} ({seconds:.0f} s)")
    finally:
        os.environ.pop(LOG_ENV, None)
    rows.append({"step": "models", "seconds": time.perf_counter() - t, "reused": False, **read_log(models_log)})
    executed = []
    with scheduler_context(scheduler) as address:
        if address:
            log(f"  scoring shards on the Dask scheduler at {address}")
        for chapter in chapters():
            reused = not force and is_up_to_date(chapter, profile, data=data, device=device)
            t = time.perf_counter()
            out = execute_chapter(chapter, profile, data=data, force=force, device=device, log=log)
            phases = read_log(timing_log_path(profile, chapter.name)) if not reused else {}
            rows.append({"step": chapter.name, "seconds": time.perf_counter() - t, "reused": reused, **phases})
            executed.append(out)
            write_timing(profile, rows)
    t = time.perf_counter()
    index = run_jupyter_book(stage(profile, executed, write_headline(profile, data)))
    rows.append({"step": "jupyter-book", "seconds": time.perf_counter() - t, "reused": False})
    rows.append({"step": "total", "seconds": time.perf_counter() - started, "reused": False})
    write_timing(profile, rows)
    log(f"book built in {time.perf_counter() - started:.0f} s: {index}")
    return index


def refresh_checked_outputs(chapter: Chapter, profile: str = "smoke") -> int:
    """Store in the source notebook the outputs nbval compares, and nothing else.

    Executes ``chapter`` under ``profile`` (the profile nbval runs, via the parameters cell's default),
    copies the outputs of the cells marked ``# NBVAL_CHECK_OUTPUT`` into the source and clears every other
    output, so ``chapters/`` holds clean sources plus the expected values. Returns the number of checked cells.
    """
    import tempfile

    import nbformat
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / chapter.source.name
        papermill.execute_notebook(str(chapter.source), str(executed), parameters={"profile": profile},
                                   cwd=str(chapter.source.parent), kernel_name="python3", progress_bar=False)
        ran = [c for c in nbformat.read(executed, as_version=4).cells
               if "injected-parameters" not in c.metadata.get("tags", [])]
    source = nbformat.read(chapter.source, as_version=4)
    checked = 0
    for cell, done in zip(source.cells, ran):
        if cell.cell_type != "code":
            continue
        if "NBVAL_CHECK_OUTPUT" in cell.source:
            cell.outputs = [o for o in done.outputs if o.get("output_type") != "display_data"]
            cell.execution_count = 1
            for output in cell.outputs:
                if "execution_count" in output:
                    output["execution_count"] = 1
            checked += 1
        else:
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    source.metadata.pop("papermill", None)
    nbformat.write(source, chapter.source)
    return checked
