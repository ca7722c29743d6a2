"""Result cubes: self-describing xarray Datasets written as NetCDF.

A cube holds ``score`` with dims (dataset, model, explainer, metric, sample), the cost ``seconds_per_image``
per (dataset, model, explainer), ``not_applicable`` per (dataset, model, explainer) (why a method could not run on
a model, "" where it ran; its scores are NaN), the model's own ``model_auroc``/``model_accuracy`` per (dataset,
model), the model's kind and cache digest, per-sample
coordinates (label, finding, box area, lesion size and contrast, model probability, correct?), explainer and
metric metadata as coordinates (family, citation, score direction, ...), optionally the pointing game's hit at a
range of tolerances (``pointing_curve``, dims (dataset, model, explainer, tolerance, sample)), and provenance
attributes. The comparison chapter needs nothing else.

The methods' dimension is called ``explainer``, not ``method``: ``.sel(method=...)`` is xarray's own keyword
(nearest/pad lookup) and would silently select nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import xarray as xr

from medlit.paths import project_root

CUBE_DIMS = ("dataset", "model", "explainer", "metric", "sample")
# Per-sample facts a data set may record (the embedded generators do): lesion size and contrast, to read difficulty.
OPTIONAL_SAMPLE_COORDS = ("lesion_area_fraction", "lesion_contrast")
REQUIRED_VARIABLES = ("score", "seconds_per_image", "model_auroc", "model_accuracy")
_VERSIONED = ("medlit", "torch", "captum", "monai", "xarray", "numpy")


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project_root(), capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(profile: str, seed: int, device: str) -> dict:
    """Attributes every cube carries: how, where and from what it was computed."""
    return {
        "profile": profile,
        "seed": seed,
        "device": device,
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": json.dumps({name: _version(name) for name in _VERSIONED}),
    }


def make_cube(*, dataset: str, model: str, methods: list, metrics: list, scores: np.ndarray,
              seconds_per_image: np.ndarray, samples: dict, model_record: dict, metric_params: dict,
              attrs: dict, model_kind: str = "", not_applicable: list[str] | None = None,
              pointing_curve: np.ndarray | None = None, tolerances: list[float] | None = None) -> xr.Dataset:
    """Assemble one cube for a single data set and model.

    Parameters
    ----------
    model, model_kind : the model's label (``ModelConfig.label``) and registered kind
    methods, metrics : lists of ``ExplainerSpec`` / ``MetricSpec`` in cube order
    scores : (method, metric, sample) float array
    seconds_per_image : (method,) float array
    not_applicable : (method,) why each method could not run on the model ("" where it ran); default all ran
    samples : per-sample arrays: sample_id, label, finding, box_area_fraction, probability, correct
    model_record : the model's record from ``load_or_train`` (test accuracy/AUROC, digest)
    metric_params : metric name -> dict of the parameters it was called with
    attrs : provenance and settings (see ``provenance``)
    pointing_curve, tolerances : optional (method, tolerance, sample) expected pointing-game hits at each tolerance
        (a fraction of the image's longer side), against the box union; stored as ``pointing_curve``
    """
    n_method, n_metric, n_sample = scores.shape
    if (n_method, n_metric) != (len(methods), len(metrics)):
        raise ValueError(f"scores shape {scores.shape} does not match {len(methods)} methods x {len(metrics)} metrics")
    per_sample = {name: (("dataset", "sample"), np.asarray(samples[name])[None])
                  for name in ("sample_id", "label", "finding", "box_area_fraction", *OPTIONAL_SAMPLE_COORDS)
                  if name in samples}
    per_model_sample = {name: (("dataset", "model", "sample"), np.asarray(samples[name])[None, None])
                        for name in ("probability", "correct")}
    coords = {
        "dataset": [dataset], "model": [model], "model_kind": ("model", [model_kind]),
        "explainer": [m.name for m in methods], "metric": [m.name for m in metrics],
        "sample": np.arange(n_sample),
        # which data set and where it is described: kept per data set when cubes of several sets are merged
        "data_card": ("dataset", [attrs.get("data_card", "")]),
        "dataset_kind": ("dataset", [attrs.get("dataset_kind", "embedded")]),
        "family": ("explainer", [m.family for m in methods]),
        "citation": ("explainer", [m.citation for m in methods]),
        "long_name": ("explainer", [m.long_name for m in methods]),
        "forward_passes": ("explainer", [m.forward_passes for m in methods]),
        "backward_passes": ("explainer", [m.backward_passes for m in methods]),
        "direction": ("metric", [m.direction for m in metrics]),
        "metric_kind": ("metric", [m.kind for m in metrics]),
        "metric_long_name": ("metric", [m.long_name for m in metrics]),
        "metric_citation": ("metric", [m.citation for m in metrics]),
        "metric_normalisation": ("metric", [m.normalisation for m in metrics]),
        "metric_params": ("metric", [json.dumps(metric_params.get(m.name, {}), sort_keys=True) for m in metrics]),
        **per_sample, **per_model_sample,
    }
    data_vars = {
        "score": (CUBE_DIMS, scores[None, None].astype(np.float32),
                  {"long_name": "explanation score", "units": "1",
                   "description": "one score per (data set, model, method, metric, image); NaN where undefined; "
                                  "which way is better is the metric's 'direction' coordinate"}),
        "seconds_per_image": (("dataset", "model", "explainer"), np.asarray(seconds_per_image, np.float64)[None, None],
                              {"long_name": "explanation wall-clock time per image", "units": "s"}),
        "model_auroc": (("dataset", "model"), [[model_record["test_auroc"]]],
                        {"long_name": "model test AUROC", "units": "1"}),
        "model_accuracy": (("dataset", "model"), [[model_record["test_accuracy"]]],
                           {"long_name": "model test accuracy", "units": "1"}),
        "model_digest": (("dataset", "model"), [[model_record.get("digest", "")]],
                         {"long_name": "cache digest of the trained model"}),
        "not_applicable": (("dataset", "model", "explainer"),
                           np.asarray(not_applicable or [""] * n_method, dtype=str)[None, None],
                           {"long_name": "why the method could not run on this model ('' where it ran)"}),
    }
    if pointing_curve is not None:
        coords["tolerance"] = np.asarray(tolerances, dtype=np.float64)
        data_vars["pointing_curve"] = (
            ("dataset", "model", "explainer", "tolerance", "sample"), pointing_curve[None, None].astype(np.float32),
            {"long_name": "pointing-game hit at each tolerance", "units": "1",
             "description": "expected hit over the tied maxima, tolerance as a fraction of the image's longer side, "
                            "against the union of the boxes"})
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))


def validate_cube(cube: xr.Dataset, source: str = "cube") -> None:
    """Raise ValueError naming ``source`` if ``cube`` lacks the dims or variables of the contract."""
    missing = [d for d in CUBE_DIMS if d not in cube.dims] + [v for v in REQUIRED_VARIABLES if v not in cube]
    if missing:
        raise ValueError(f"{source}: not a medlit cube, missing {', '.join(missing)}")


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write any Dataset to NetCDF atomically (temporary file, then rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        ds.to_netcdf(tmp, engine="netcdf4")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_netcdf(path: str | os.PathLike) -> xr.Dataset:
    """Load a NetCDF file fully into memory (the file is closed afterwards); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            loaded = ds.load()
    except Exception as err:
        raise ValueError(f"{path} cannot be read as NetCDF: {err}") from err
    loaded.attrs["source_file"] = path.name
    return loaded


def write_cube(cube: xr.Dataset, path: str | os.PathLike) -> Path:
    """Validate ``cube`` against the contract and write it atomically."""
    validate_cube(cube)
    return write_netcdf(cube, path)


def read_cube(path: str | os.PathLike) -> xr.Dataset:
    """Read and validate a cube; errors name the file."""
    cube = read_netcdf(path)
    validate_cube(cube, str(path))
    return cube


def load_if_current(path: str | os.PathLike, key: str, read=read_netcdf) -> xr.Dataset | None:
    """The dataset at ``path`` if its ``cache_key`` attribute equals ``key``, else None.

    An unreadable file is moved aside to ``<name>.unreadable`` (kept for inspection) with a warning, and None
    is returned so that the caller recomputes it.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        ds = read(path)
    except ValueError as err:
        aside = path.with_name(path.name + ".unreadable")
        path.replace(aside)
        warnings.warn(f"{err}; moved it to {aside.name} and recomputing", stacklevel=3)
        return None
    return ds if ds.attrs.get("cache_key") == key else None


# Per-explainer metadata coordinates: identical wherever an explainer appears, so merging keeps one copy.
_EXPLAINER_COORDS = ("family", "citation", "long_name", "forward_passes", "backward_passes")


def merge_cubes(cubes: list[xr.Dataset]) -> xr.Dataset:
    """Combine cubes: along ``explainer`` within a (data set, model), then along ``model``, then ``dataset``.

    Cubes of one data set must share their samples (per-sample coordinates are checked for equality). A method
    present in several cubes of one (data set, model) (the controls, which every chapter carries) is kept once,
    after checking that its scores agree. Models with different methods (a ViT's attention methods) are aligned
    on the union of methods; a method a model's cubes do not hold gets NaN scores and the reason "not run on
    this model". Data sets with different numbers of images are padded with NaN scores (and empty sample ids)
    up to the largest; ``summarise`` skips the padding.
    """
    if not cubes:
        raise ValueError("merge_cubes: no cubes given")
    cubes = [_with_not_applicable(c) for c in cubes]
    parts: dict[str, dict[str, list[xr.Dataset]]] = {}
    for cube in cubes:
        for dataset in cube.dataset.values:
            for model in cube.model.values:
                parts.setdefault(str(dataset), {}).setdefault(str(model), []).append(
                    cube.sel(dataset=[dataset], model=[model]))
    merged = [_merge_models([_merge_explainers(p) for p in by_model.values()]) for by_model in parts.values()]
    if len(merged) == 1:
        combined = merged[0]
    else:
        merged = _align_explainers(merged)
        n = max(m.sizes["sample"] for m in merged)
        padded = [m.reindex(sample=np.arange(n)) for m in merged]
        for m in padded:  # reindexing fills strings with NaN; NetCDF and pandas want a string there
            for name in ("sample_id", "finding"):
                m[name] = m[name].fillna("")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            combined = xr.concat(padded, dim="dataset", data_vars="minimal", coords="different", compat="equals",
                                 join="outer", combine_attrs="drop_conflicts")
        combined["not_applicable"] = combined.not_applicable.fillna(NOT_RUN).astype(str)
    combined.attrs["sources"] = json.dumps([c.attrs.get("source_file", c.attrs.get("chapter", "?")) for c in cubes])
    return combined


NOT_RUN = "not run on this model"


def _with_not_applicable(cube: xr.Dataset) -> xr.Dataset:
    if "not_applicable" in cube:
        return cube
    shape = (cube.sizes["dataset"], cube.sizes["model"], cube.sizes["explainer"])
    return cube.assign(not_applicable=(("dataset", "model", "explainer"), np.full(shape, "", dtype=object)))


def _align_explainers(parts: list[xr.Dataset]) -> list[xr.Dataset]:
    """Reindex every part on the union of explainers (in order of appearance), carrying each explainer's metadata
    from the part that holds it; the added methods get NaN scores and ``NOT_RUN``."""
    names = list(dict.fromkeys(n for p in parts for n in p.explainer.values.tolist()))
    if all(p.explainer.values.tolist() == names for p in parts):
        return parts
    meta = {}
    for p in parts:
        for i, name in enumerate(p.explainer.values.tolist()):
            meta.setdefault(name, {c: p[c].values[i] for c in _EXPLAINER_COORDS})
    aligned = []
    for p in parts:
        p = p.drop_vars(list(_EXPLAINER_COORDS)).reindex(explainer=names)
        p["not_applicable"] = p.not_applicable.fillna(NOT_RUN).astype(str)
        aligned.append(p.assign_coords({c: ("explainer", [meta[n][c] for n in names]) for c in _EXPLAINER_COORDS}))
    return aligned


def _merge_models(parts: list[xr.Dataset]) -> xr.Dataset:
    """Concatenate the cubes of several models of one data set along ``model``.

    A model explained on fewer images (``Profile.n_explain_by_model``) must hold the first images of the others;
    it is padded with NaN scores on the rest, which keep their sample ids.
    """
    if len(parts) == 1:
        return parts[0]
    parts = _align_explainers(_pad_models(parts))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return xr.concat(parts, dim="model", data_vars="minimal", coords="minimal", compat="equals",
                         join="outer", combine_attrs="drop_conflicts")


def _per_sample_coords(cube: xr.Dataset) -> list[str]:
    """The coordinates that describe an image, not what a model made of it: dims (dataset, sample)."""
    return [name for name, c in cube.coords.items() if c.dims == ("dataset", "sample")]


def _pad_models(parts: list[xr.Dataset]) -> list[xr.Dataset]:
    longest = max(parts, key=lambda p: p.sizes["sample"])
    n = longest.sizes["sample"]
    padded = []
    for part in parts:
        k = part.sizes["sample"]
        if k == n:
            padded.append(part)
            continue
        ours, theirs = part.sample_id.values.ravel().tolist(), longest.sample_id.values.ravel()[:k].tolist()
        if ours != theirs:
            raise ValueError(
                f"merge_cubes: model {part.model.values[0]} on {part.dataset.values[0]} was explained on other images "
                f"than model {longest.model.values[0]} ({part.attrs.get('source_file', 'cube')} vs "
                f"{longest.attrs.get('source_file', 'cube')}): a model with fewer images must have the first of the "
                "others' images")
        grown = part.drop_vars(_per_sample_coords(part)).reindex(sample=np.arange(n))
        padded.append(grown.assign_coords({c: longest[c] for c in _per_sample_coords(longest)}))
    return padded


def _merge_explainers(cubes: list[xr.Dataset]) -> xr.Dataset:
    digests = {}
    for cube in cubes:
        digest = str(cube.model_digest.values.ravel()[0]) if "model_digest" in cube else ""
        digests.setdefault(digest, cube.attrs.get("source_file", cube.attrs.get("chapter", "cube")))
    if len(digests) > 1:  # one chapter's cube is older than the model it now trains: say which, not xarray's error
        model, dataset = str(cubes[0].model.values[0]), str(cubes[0].dataset.values[0])
        listed = "; ".join(f"{source} (model digest {digest})" for digest, source in digests.items())
        raise ValueError(f"merge_cubes: the cubes of model {model} on {dataset} come from different trainings of it: "
                         f"{listed}. Re-run the chapters whose cubes are older (make book re-runs what changed).")
    seen: dict[str, xr.Dataset] = {}
    parts = []
    for cube in cubes:
        source = cube.attrs.get("source_file", cube.attrs.get("chapter", "cube"))
        duplicate = [m for m in cube.explainer.values if m in seen]
        for name in duplicate:
            earlier = seen[name]
            if not earlier.score.sel(explainer=name).equals(cube.score.sel(explainer=name)):
                raise ValueError(f"merge_cubes: explainer {name!r} differs between "
                                 f"{earlier.attrs.get('source_file', '?')} and {source}")
        fresh = [m for m in cube.explainer.values if m not in seen]
        for name in fresh:
            seen[name] = cube
        if fresh:
            parts.append(cube.sel(explainer=fresh))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # xarray's changing concat defaults; we pass them all
        return xr.concat(parts, dim="explainer", data_vars="minimal", coords="minimal", compat="equals",
                         join="outer", combine_attrs="drop_conflicts")
