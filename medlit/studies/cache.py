"""One cache-and-provenance path for every study (results that are not per-image scores).

A study is a function of a prepared data set and model plus its settings; ``run_study`` keys it on those and
on the code that computes it (the study's module and everything it imports), reads it back when an up-to-date
copy is on disk, and otherwise computes it, stamps provenance and writes it atomically under
``results/<profile>/checks/<chapter>--<study>--<dataset>--<model kind>.nc``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import xarray as xr

from medlit.cube import load_if_current, provenance, read_netcdf, write_netcdf
from medlit.paths import checks_dir, code_hash
from medlit.timing import phase


def study_path(prepared, chapter: str, study: str) -> Path:
    """Where ``study`` of ``chapter`` for ``prepared``'s data set and model kind is kept."""
    return checks_dir(prepared.profile.name) / f"{chapter}--{study}--{prepared.dataset}--{prepared.model_kind}.nc"


def study_key(prepared, chapter: str, study: str, settings: dict, code_module: str) -> str:
    """Hash of what determines the study's result: its settings, the profile, data set, model and code."""
    key = {"chapter": chapter, "study": study, "settings": settings, "profile": prepared.profile.as_dict(),
           "dataset": prepared.dataset, "model": prepared.record["digest"], "code": code_hash(code_module)}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_study(prepared, *, chapter: str, study: str, settings: dict, code_module: str,
              compute: Callable[[], xr.Dataset], force: bool = False) -> xr.Dataset:
    """The study's Dataset: read back when current, else ``compute()``d, stamped and written.

    Parameters
    ----------
    prepared : ``medlit.benchmark.Prepared``, the data set and model the study runs on
    study : the study's name (part of the file name)
    settings : everything besides data, model and code that changes the result (JSON-serialisable)
    code_module : the module that computes the study (``__name__`` of the caller); its import closure is hashed
    compute : computes the study's Dataset
    """
    path = study_path(prepared, chapter, study)
    key = study_key(prepared, chapter, study, settings, code_module)
    cached = None if force else load_if_current(path, key)
    if cached is not None:
        return cached
    with phase("studies"):
        ds = compute()
    ds.attrs.update(provenance(prepared.profile.name, prepared.profile.seed, str(prepared.device)))
    ds.attrs.update({"chapter": chapter, "study": study, "cache_key": key, "dataset": prepared.dataset,
                     "model": prepared.record["name"], "model_kind": prepared.model_kind,
                     "model_digest": prepared.record["digest"], "settings": json.dumps(settings, default=str)})
    write_netcdf(ds, path)
    return read_netcdf(path)
