"""The chapter pipeline: data -> trained model -> maps per method -> scores per metric -> cube.

A chapter calls ``prepare`` once and ``run_methods`` with its list of methods. Each method is one shard
(``score_method``): a pure function of the model, the images and the settings, so that shards can later run
elsewhere (e.g. on Dask) and be merged with ``medlit.cube.merge_cubes``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from medlit.cube import (load_if_current, make_cube, merge_cubes, provenance, read_cube, read_netcdf, write_cube,
                         write_netcdf)
from medlit.data import DATASETS, SampleSet, load_dataset
from medlit.explain import EXPLAINERS, explain_batched
from medlit.metrics import METRICS, scaled_tolerance
from medlit.models import Classifier, ModelConfig, load_or_train
from medlit.models.training import predict_proba
from medlit.paths import checks_dir, cubes_dir, source_hash
from medlit.profiles import Profile, get_profile

DEFAULT_METRICS = ("pointing_game", "pointing_game_strict", "energy_pointing_game", "iou_otsu", "auprc",
                   "insertion_auc", "deletion_auc")
# The embedded data sets every method chapter scores; real data sets given with ``--data`` are added after them.
EMBEDDED_DATASETS = ("cxr-phantom", "fundus-lesions")
GROUND_TRUTH = "box"  # localisation is scored against the union of the boxes, as with real box-annotated data


@dataclass
class Prepared:
    """Everything a chapter needs: the profile, the data splits, the trained model and its record."""

    profile: Profile
    dataset: str
    splits: dict
    model: Classifier
    record: dict

    @property
    def explained(self) -> SampleSet:
        """The images that are explained and scored: the first ``profile.explain_count(dataset)`` positive
        test images that carry a box."""
        return positive_subset(self.splits["test"], self.profile.explain_count(self.dataset))

    @property
    def model_label(self) -> str:
        """The model's name without the data set (the cube's ``model`` coordinate; the data set is its own dim)."""
        config = self.record["config"]
        return f"{config['arch']}-{config['image_size']}px-s{config['seed']}"


def model_config(profile: Profile, dataset: str, in_channels: int = 1) -> ModelConfig:
    spec = DATASETS[dataset]
    code = source_hash("models", *spec.source_modules) + spec.fingerprint
    return ModelConfig(dataset=dataset, image_size=profile.image_size, n_train=profile.n_train,
                       n_val=profile.n_val, epochs=profile.epochs, batch_size=profile.batch_size,
                       seed=profile.seed, in_channels=in_channels, code=code)


def prepare(profile: str | Profile = "quick", dataset: str = "cxr-phantom", *, progress: bool = True) -> Prepared:
    """Generate the data and train (or load from the cache) the model for ``profile``."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    splits = load_dataset(dataset, profile)
    config = model_config(profile, dataset, in_channels=splits["train"].images.shape[1])
    model, record = load_or_train(config, splits, progress=progress)
    return Prepared(profile, dataset, splits, model, record)


def positive_subset(data: SampleSet, n: int) -> SampleSet:
    """The first ``n`` images that carry a finding and at least one box, in data-set order (deterministic).

    Real data sets can have positives without boxes (labels mined from reports); they cannot be scored.
    """
    boxed = ~torch.isnan(data.boxes[..., 0]).all(dim=1)
    positives = torch.nonzero((data.labels == 1) & boxed).flatten()[:n]
    return data.subset(positives.numpy())


def metric_params(profile: Profile, data: SampleSet) -> dict:
    """The settings each metric is called with under ``profile`` (recorded in the cube)."""
    original = data.attrs.get("original_size", data.image_size[0])
    return {
        "pointing_game": {"tolerance_px": scaled_tolerance(original, data.image_size)},
        "insertion_auc": {"steps": profile.deletion_steps, "substrate": "blur"},
        "deletion_auc": {"steps": profile.deletion_steps, "substrate": "zeros"},
    }


def score_maps(model, data: SampleSet, maps: torch.Tensor, metrics: list[str], params: dict) -> np.ndarray:
    """Scores (metric, sample) of ``maps`` against the box ground truth and the model's behaviour."""
    regions = data.box_masks()
    target = torch.ones(len(data), dtype=torch.long)
    rows = []
    for name in metrics:
        spec = METRICS[name]
        kwargs = params.get(name, {})
        if spec.kind == "localisation":
            rows.append(spec.fn(maps, regions, **kwargs))
        else:
            rows.append(spec.fn(model, data.images, target, maps, **kwargs))
    return torch.stack([torch.as_tensor(r, dtype=torch.float32) for r in rows]).numpy()


def score_method(model, data: SampleSet, method: str, metrics: list[str], params: dict, *, batch_size: int = 32
                 ) -> tuple[np.ndarray, float]:
    """One shard: explain ``data`` with ``method`` and score it; returns (scores[metric, sample], s/image)."""
    target = torch.ones(len(data), dtype=torch.long)
    maps, seconds = explain_batched(method, model, data.images, target, batch_size=batch_size)
    return score_maps(model, data, maps, metrics, params), seconds / max(len(data), 1)


# The code that determines a cube's numbers; a change elsewhere (plots, tables, the CLI) keeps cubes valid.
SCORING_CODE = ("data", "models", "explain", "metrics", "benchmark.py", "cube.py", "profiles.py", "sanity.py")


def _cache_key(chapter: str, methods: list[str], metrics: list[str], prepared: Prepared) -> str:
    key = {"chapter": chapter, "methods": methods, "metrics": metrics, "profile": prepared.profile.as_dict(),
           "dataset": prepared.dataset, "model": prepared.record["digest"], "code": source_hash(*SCORING_CODE)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def sample_coords(prepared: Prepared, data: SampleSet) -> dict:
    prob = predict_proba(prepared.model, data.images).numpy()
    area = data.box_masks().float().mean(dim=(1, 2)).numpy()
    return {
        "sample_id": np.asarray(data.meta.get("sample_id", [f"{data.name}-{i}" for i in range(len(data))]), str),
        "label": data.labels.numpy(),
        "finding": np.asarray(data.meta.get("finding", ["unknown"] * len(data)), str),
        "box_area_fraction": area,
        "probability": prob,
        "correct": (prob >= 0.5) == (data.labels.numpy() == 1),
    }


def cube_path(profile: str, chapter: str, dataset: str) -> Path:
    """Where a chapter's cube for one data set lives: ``results/<profile>/cubes/<chapter>--<dataset>.nc``."""
    return cubes_dir(profile) / f"{chapter}--{dataset}.nc"


def run_methods(prepared: Prepared, methods: list[str], *, chapter: str, metrics: list[str] | None = None,
                force: bool = False, progress: bool = True) -> xr.Dataset:
    """The chapter's cube: computed, or read back when an up-to-date one is on disk.

    The cube is ``cube_path(profile, chapter, dataset)``; it is up to date when its ``cache_key`` attribute
    matches the chapter, methods, metrics, profile, model and the scoring code (``SCORING_CODE``) of this call.
    """
    metrics = list(metrics or DEFAULT_METRICS)
    unknown = [m for m in methods if m not in EXPLAINERS] + [m for m in metrics if m not in METRICS]
    if unknown:
        raise KeyError(f"unknown methods or metrics: {', '.join(unknown)}")
    path = cube_path(prepared.profile.name, chapter, prepared.dataset)
    key = _cache_key(chapter, methods, metrics, prepared)
    cached = None if force else load_if_current(path, key, read=read_cube)
    if cached is not None:
        return cached

    data = prepared.explained
    params = metric_params(prepared.profile, data)
    device = str(next(prepared.model.parameters()).device)
    scores, seconds = [], []
    for method in tqdm(methods, desc=f"{chapter}: methods", disable=not progress):
        s, t = score_method(prepared.model, data, method, metrics, params)
        scores.append(s)
        seconds.append(t)
    attrs = provenance(prepared.profile.name, prepared.profile.seed, device)
    attrs.update({
        "chapter": chapter, "cache_key": key, "ground_truth": GROUND_TRUTH,
        "explanation_target": "positive class, on positive test images",
        "normalisation": "explainers return raw maps; each metric's own treatment is its metric_normalisation",
        "data_card": DATASETS[prepared.dataset].data_card,
        "dataset_kind": DATASETS[prepared.dataset].kind,
        "dataset_fingerprint": DATASETS[prepared.dataset].fingerprint,
        "n_explained": len(data),
        "profile_settings": json.dumps(prepared.profile.as_dict()),
    })
    cube = make_cube(dataset=prepared.dataset, model=prepared.model_label,
                     methods=[EXPLAINERS[m] for m in methods], metrics=[METRICS[m] for m in metrics],
                     scores=np.stack(scores), seconds_per_image=np.asarray(seconds),
                     samples=sample_coords(prepared, data), model_record=prepared.record, metric_params=params,
                     attrs=attrs)
    write_cube(cube, path)
    return read_cube(Path(path))


def chapter_datasets(data: str = "") -> list[str]:
    """The data sets a method chapter scores: ``EMBEDDED_DATASETS``, then each real data set named in ``data``.

    ``data`` is what ``medlit book --data`` (or ``make book DATA=...``) passes to every chapter: comma-separated
    ``adapter=folder`` pairs such as ``"nih-cxr14=/data/nih"``. Each is registered as a data set on the way.
    """
    names = list(EMBEDDED_DATASETS)
    if data.strip():
        from medlit.data.adapters import parse_data_options, register_real_dataset

        names.extend(register_real_dataset(adapter, root) for adapter, root in parse_data_options(data))
    return names


def chapter_cube_paths(profile: str, real_data: str = "") -> list[Path]:
    """The cube files the method chapters wrote for this run's data sets (``chapter_datasets(real_data)``),
    in data-set order; cubes of data sets not in this run (an earlier ``--data``) are left out."""
    paths = []
    for dataset in chapter_datasets(real_data):
        paths.extend(sorted(cubes_dir(profile).glob(f"*--{dataset}.nc")))
    return paths


def run_chapter(profile: str | Profile, methods: list[str], *, chapter: str, datasets: list[str],
                metrics: list[str] | None = None, progress: bool = False) -> tuple[xr.Dataset, dict[str, Prepared]]:
    """Score ``methods`` on every data set in ``datasets``: one shard (cube file) per data set, merged along the
    ``dataset`` dimension. Returns the merged cube and each data set's ``Prepared`` (data and model)."""
    prepared = {name: prepare(profile, name, progress=progress) for name in datasets}
    cubes = [run_methods(p, methods, chapter=chapter, metrics=metrics, progress=progress) for p in prepared.values()]
    return merge_cubes(cubes), prepared


def run_randomisation_check(prepared: Prepared, methods: list[str], *, chapter: str, force: bool = False,
                            progress: bool = True) -> xr.Dataset:
    """Cascading model-parameter randomisation {cite}`adebayo2018sanity` of ``methods`` on the first
    ``profile.n_sanity`` explained images, cached as ``results/<profile>/checks/<chapter>_randomisation.nc``."""
    from medlit.sanity import cascading_randomisation

    path = checks_dir(prepared.profile.name) / f"{chapter}_randomisation.nc"
    key = _cache_key(chapter + "/randomisation", methods, [], prepared)
    cached = None if force else load_if_current(path, key)
    if cached is not None:
        return cached
    data = positive_subset(prepared.splits["test"], prepared.profile.n_sanity)
    target = torch.ones(len(data), dtype=torch.long)
    ds = cascading_randomisation(prepared.model, data.images, target, methods, seed=prepared.profile.seed,
                                 progress=progress)
    ds.attrs.update(provenance(prepared.profile.name, prepared.profile.seed,
                               str(next(prepared.model.parameters()).device)))
    ds.attrs.update({"chapter": chapter, "cache_key": key, "model": prepared.record["name"],
                     "model_digest": prepared.record["digest"]})
    write_netcdf(ds, path)
    return read_netcdf(path)


def run_budget_study(prepared: Prepared, budgets: dict[str, tuple[str, list]], *, chapter: str,
                     metrics: tuple[str, ...] = ("pointing_game", "energy_pointing_game", "insertion_auc",
                                                 "deletion_auc"),
                     force: bool = False, progress: bool = True) -> xr.Dataset:
    """Scores of each method as its perturbation budget grows, on the first ``profile.n_sanity`` explained images.

    ``budgets`` maps a method to (setting name, values), e.g. ``{"rise": ("n_masks", [250, 500, 1000])}``.
    Returns (and caches under ``results/<profile>/checks/<chapter>_budget.nc``) a Dataset with ``score``
    (explainer, budget, metric, sample), ``seconds_per_image`` (explainer, budget) and the setting's value per
    (explainer, budget).
    """
    path = checks_dir(prepared.profile.name) / f"{chapter}_budget.nc"
    plan = {m: [setting, list(values)] for m, (setting, values) in budgets.items()}
    key = _cache_key(chapter + "/budget" + json.dumps(plan, sort_keys=True), list(budgets), list(metrics), prepared)
    cached = None if force else load_if_current(path, key)
    if cached is not None:
        return cached
    data = positive_subset(prepared.splits["test"], prepared.profile.n_sanity)
    params = metric_params(prepared.profile, data)
    target = torch.ones(len(data), dtype=torch.long)
    steps = max(len(values) for _, values in budgets.values())
    scores = np.full((len(budgets), steps, len(metrics), len(data)), np.nan, np.float32)
    seconds = np.full((len(budgets), steps), np.nan)
    setting_value = np.full((len(budgets), steps), np.nan)
    bar = tqdm(total=sum(len(v) for _, v in budgets.values()), desc=f"{chapter}: budgets", disable=not progress)
    for i, (method, (setting, values)) in enumerate(budgets.items()):
        for j, value in enumerate(values):
            maps, t = explain_batched(method, prepared.model, data.images, target, **{setting: value})
            scores[i, j] = score_maps(prepared.model, data, maps, list(metrics), params)
            seconds[i, j], setting_value[i, j] = t / len(data), value
            bar.update(1)
    bar.close()
    ds = xr.Dataset(
        {"score": (("explainer", "budget", "metric", "sample"), scores, {"long_name": "explanation score"}),
         "seconds_per_image": (("explainer", "budget"), seconds, {"units": "s"}),
         "setting_value": (("explainer", "budget"), setting_value,
                           {"long_name": "value of the method's budget setting"})},
        coords={"explainer": list(budgets), "budget": np.arange(steps), "metric": list(metrics),
                "sample": np.arange(len(data)),
                "setting": ("explainer", [setting for setting, _ in budgets.values()]),
                "direction": ("metric", [METRICS[m].direction for m in metrics])})
    ds.attrs.update(provenance(prepared.profile.name, prepared.profile.seed,
                               str(next(prepared.model.parameters()).device)))
    ds.attrs.update({"chapter": chapter, "cache_key": key, "model": prepared.record["name"]})
    write_netcdf(ds, path)
    return read_netcdf(path)
