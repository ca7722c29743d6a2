"""The chapter pipeline: data -> trained model -> maps per method -> scores per metric -> cube.

A chapter calls ``prepare`` once and ``run_methods`` with its list of methods (or ``run_chapter`` for every data
set and model kind at once). Results that are not per-image scores live in ``medlit.studies``. Each method is one shard
(``score_method``): a pure function of the model, the images and the settings, so that shards can later run
elsewhere (e.g. on Dask) and be merged with ``medlit.cube.merge_cubes``.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from medlit.cube import load_if_current, make_cube, merge_cubes, provenance, read_cube, write_cube
from medlit.data import DATASETS, SampleSet, load_dataset
from medlit.device import forward_batch, model_device, resolve_device
from medlit.explain import (EXPLAINERS, explain_batched, missing_data_inputs, not_applicable_reason,
                           positive_class)
from medlit.explain.data_inputs import data_inputs_for
from medlit.data.difficulty import lesion_area_fraction, lesion_contrast
from medlit.metrics import DEFAULT_CURVE_FRACTIONS, DEFAULT_TOLERANCE_FRACTION, METRICS, pointing_curve
from medlit.metrics.ground_truth import metric_spec, split_name
from medlit.models import MODEL_KINDS, ModelConfig, load_or_train
# fine-tuned kinds register here, not in medlit.models: their code (explainers, metrics) stays out of the other
# kinds' code hash
from medlit.models import idexpo_finetuned  # noqa: F401
from medlit.models.training import predict_proba
from medlit.paths import atomic_write_bytes, code_hash, cubes_dir
from medlit.perturbation import PROTOCOL_SUBSTRATE
from medlit.timing import phase
from medlit.profiles import Profile, get_profile

DEFAULT_METRICS = ("pointing_game", "pointing_game_strict", "energy_pointing_game", "iou_otsu", "auprc",
                   "relevance_rank_accuracy", "lesion_recall",
                   # the same localisation scores against the exact finding pixels (medlit.metrics.ground_truth)
                   "pointing_game@mask", "energy_pointing_game@mask", "auprc@mask",
                   "insertion_auc", "deletion_auc")
# The embedded data sets every method chapter scores; real data sets given with ``--data`` are added after them.
EMBEDDED_DATASETS = ("cxr-phantom", "fundus-lesions")
# The model kind every method chapter explains unless it names others (``medlit.models.MODEL_KINDS``).
DEFAULT_MODEL = "resnet10"
# Localisation is scored against the union of the boxes, as with real box-annotated data, and metrics named
# "<metric>@mask" against the exact finding mask; the pointing-game curve is against the boxes.
GROUND_TRUTH = "box (metrics named <metric>@mask: the exact finding mask)"


@dataclass
class Prepared:
    """Everything a chapter needs: the profile, the data splits, the trained model, its record and device."""

    profile: Profile
    dataset: str
    splits: dict
    model: torch.nn.Module
    record: dict

    @property
    def explained(self) -> SampleSet:
        """The images that are explained and scored: the first ``profile.explain_count(dataset, model kind)``
        positive test images that carry a box (a model kind with fewer gets the first of the others' images)."""
        return positive_subset(self.splits["test"], self.profile.explain_count(self.dataset, self.model_kind))

    @property
    def model_kind(self) -> str:
        """The registered model kind (``medlit.models.MODEL_KINDS``)."""
        return self.record["config"]["arch"]

    @property
    def model_label(self) -> str:
        """The model's name without the data set (the cube's ``model`` coordinate; the data set is its own dim)."""
        return ModelConfig(**self.record["config"]).label

    @property
    def device(self) -> torch.device:
        return model_device(self.model)


def _module_name(source_file: str) -> str:
    """``"data/phantom.py"`` -> ``"medlit.data.phantom"``."""
    return "medlit." + source_file.removesuffix(".py").replace("/", ".")


def model_config(profile: Profile, dataset: str, in_channels: int = 1, model: str = DEFAULT_MODEL,
                 device_type: str = "cpu") -> ModelConfig:
    """The configuration of model kind ``model`` trained on ``dataset`` under ``profile``.

    Its ``code`` field hashes the code that builds and trains the model and makes the data (and the data
    fingerprint of real data), so a change there retrains; other model kinds' code does not.
    """
    spec = DATASETS[dataset]
    code = code_hash(MODEL_KINDS[model].build.__module__, MODEL_KINDS[model].recipe.__module__,
                     *map(_module_name, spec.source_modules)) + spec.fingerprint
    base = ""
    if MODEL_KINDS[model].base:  # fine-tuned: named after the exact model it starts from
        start = model_config(profile, dataset, in_channels, MODEL_KINDS[model].base, device_type)
        base = f"{start.name}-{start.digest()}"
    return ModelConfig(dataset=dataset, image_size=profile.image_size, n_train=profile.n_train,
                       n_val=profile.n_val, epochs=profile.epochs, batch_size=profile.batch_size,
                       seed=profile.seed, arch=model, in_channels=in_channels, device_type=device_type, code=code,
                       base=base)


def prepare(profile: str | Profile = "quick", dataset: str = "cxr-phantom", *, model: str = DEFAULT_MODEL,
            device: str | torch.device | None = None, progress: bool = True, splits: dict | None = None) -> Prepared:
    """Generate the data and train (or load from the cache) model kind ``model`` for ``profile``.

    ``device``: ``"auto"`` (CUDA when there is one), ``"cpu"`` or ``"cuda"``; None reads ``$MEDLIT_DEVICE``.
    ``splits``: the data set's splits when the caller has them already (``load_dataset(dataset, profile)``), so that
    several models of one data set share one copy in memory.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    if splits is None:
        with phase("data"):
            splits = load_dataset(dataset, profile)
    if MODEL_KINDS[model].base:  # the model it is fine-tuned from is trained (or loaded) first
        prepare(profile, dataset, model=MODEL_KINDS[model].base, device=device, progress=progress, splits=splits)
    config = model_config(profile, dataset, in_channels=splits["train"].images.shape[1], model=model,
                          device_type=device.type)
    with phase("models"):
        trained, record = load_or_train(config, splits, device=device, progress=progress)
    return Prepared(profile, dataset, splits, trained, record)


def positive_subset(data: SampleSet, n: int) -> SampleSet:
    """The first ``n`` images that carry a finding and at least one box, in data-set order (deterministic).

    Real data sets can have positives without boxes (labels mined from reports); they cannot be scored.
    """
    boxed = ~torch.isnan(data.boxes[..., 0]).all(dim=1)
    positives = torch.nonzero((data.labels == 1) & boxed).flatten()[:n]
    return data.subset(positives.numpy())


def metric_params(profile: Profile, data: SampleSet) -> dict:
    """The settings each metric is called with under ``profile`` (recorded in the cube)."""
    return {
        "pointing_game": {"tolerance_fraction": DEFAULT_TOLERANCE_FRACTION},
        "pointing_game@mask": {"tolerance_fraction": DEFAULT_TOLERANCE_FRACTION},
        # both curves, like the perturbation methods' fills, use the protocol's one substrate (a blurred copy)
        "insertion_auc": {"steps": profile.deletion_steps, "substrate": PROTOCOL_SUBSTRATE},
        "deletion_auc": {"steps": profile.deletion_steps, "substrate": PROTOCOL_SUBSTRATE},
    }


def score_maps(model, data: SampleSet, maps: torch.Tensor, metrics: list[str], params: dict) -> np.ndarray:
    """Scores (metric, sample) of ``maps`` against the box ground truth and the model's behaviour.

    Faithfulness metrics run on the model's device, in batches of its ``forward_batch``; scores return to the CPU.
    """
    regions = {"box": data.box_masks(), "mask": data.finding_masks}
    device = model_device(model)
    images, target = data.images.to(device), positive_class(len(data), device)
    rows = []
    for name in metrics:
        spec, ground_truth = metric_spec(name), split_name(name)[1]
        kwargs = params.get(name, {})
        if spec.kind == "localisation":
            rows.append(spec.fn(maps, regions[ground_truth], **kwargs))
        elif spec.kind == "lesion":
            rows.append(spec.fn(maps, data.boxes, **kwargs))
        else:
            rows.append(spec.fn(model, images, target, maps.to(device), batch_size=forward_batch(device),
                                **kwargs).cpu())
    return torch.stack([torch.as_tensor(r, dtype=torch.float32) for r in rows]).numpy()


def score_method(model, data: SampleSet, method: str, metrics: list[str], params: dict, *,
                 batch_size: int | None = None, data_inputs: dict | None = None
                 ) -> tuple[np.ndarray, float, str, np.ndarray]:
    """One shard: explain ``data`` with ``method`` and score it.

    ``data_inputs`` are what data-aware controls need besides the images (``medlit.explain.data_inputs``).
    Returns (scores[metric, sample], seconds per image, reason, pointing_curve[tolerance, sample]). When the model
    does not offer what the method needs, nothing runs: the scores, the curve and the time are NaN and ``reason``
    says why ("" otherwise).
    """
    reason = not_applicable_reason(method, model)
    missing = missing_data_inputs(method, data_inputs)
    if missing and not reason:
        reason = f"needs data input {', '.join(missing)}, which this data set does not provide"
    if reason:
        return (np.full((len(metrics), len(data)), np.nan, np.float32), float("nan"), reason,
                np.full((len(DEFAULT_CURVE_FRACTIONS), len(data)), np.nan, np.float32))
    with phase("explaining"):
        maps, seconds = explain_batched(method, model, data.images, positive_class(len(data)),
                                        batch_size=batch_size, data_inputs=data_inputs)
    with phase("scoring"):
        curve = pointing_curve(maps, data.box_masks(), DEFAULT_CURVE_FRACTIONS).numpy().T
        scores = score_maps(model, data, maps, metrics, params)
    return scores, seconds / max(len(data), 1), "", curve


# The code that determines a cube's numbers: this module and everything it imports (``medlit.paths.code_hash``).
# A change elsewhere (plots, tables, the command line) keeps cubes valid.
SCORING_MODULES = ("medlit.benchmark",)


def shard_path(prepared: Prepared, method: str, key: str) -> Path:
    """Where one method's scores on one data set and model are kept, whichever chapter computed them:
    ``results/<profile>/shards/<dataset>--<model kind>--<method>--<key>.npz``."""
    name = f"{prepared.dataset}--{prepared.model_kind}--{method}--{key}.npz"
    return cubes_dir(prepared.profile.name).parent / "shards" / name


def _shard_key(method: str, metrics: list[str], params: dict, prepared: Prepared, n_images: int) -> str:
    key = {"method": method, "metrics": metrics, "params": params, "profile": prepared.profile.as_dict(),
           "dataset": prepared.dataset, "model": prepared.record["digest"], "n": n_images,
           "curve": list(DEFAULT_CURVE_FRACTIONS), "code": code_hash(*SCORING_MODULES)}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_shard(path: Path) -> tuple[np.ndarray, float, str, np.ndarray] | None:
    """A shard file's (scores, seconds, reason, curve); None when there is none, or (with a warning) when it
    cannot be read: a torn or foreign file is scored again and overwritten."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as shard:
            return shard["scores"], float(shard["seconds"]), str(shard["reason"]), shard["curve"]
    except Exception as error:
        warnings.warn(f"score shard {path} could not be read ({error}); scoring it again", stacklevel=3)
        return None


def cached_score_method(prepared: Prepared, data: SampleSet, method: str, metrics: list[str], params: dict,
                        data_inputs: dict | None, *, force: bool = False) -> tuple[np.ndarray, float, str, np.ndarray]:
    """``score_method``, read back from its shard file when this method was scored on the same images, model,
    metrics, settings and scoring code before, by any chapter (the controls every chapter shows are scored once).
    A shard that cannot be read is computed again and overwritten."""
    path = shard_path(prepared, method, _shard_key(method, metrics, params, prepared, len(data)))
    stored = None if force else read_shard(path)
    if stored is not None:
        return stored
    scores, seconds, reason, curve = score_method(prepared.model, data, method, metrics, params,
                                                  data_inputs=data_inputs)
    buffer = io.BytesIO()
    np.savez(buffer, scores=scores, seconds=np.float64(seconds), reason=np.asarray(reason), curve=curve)
    atomic_write_bytes(path, buffer.getvalue())
    return scores, seconds, reason, curve


def score_shards(prepared: Prepared, data: SampleSet, methods: list[str], metrics: list[str], params: dict,
                 inputs: dict | None, *, chapter: str, force: bool = False, progress: bool = True) -> list[tuple]:
    """``cached_score_method`` of every method, in order: in this process, or, when a scheduler is set
    (``$MEDLIT_SCHEDULER``, :mod:`medlit.cluster`), the shards not on disk yet as tasks on that cluster."""
    from medlit.cluster import ShardTask, score_on_cluster, scheduler_setting

    address = scheduler_setting()
    if not address:
        return [cached_score_method(prepared, data, method, metrics, params, inputs, force=force)
                for method in tqdm(methods, desc=f"{chapter}: methods", disable=not progress)]
    from medlit.data.adapters import registration

    done = {} if force else {m: read_shard(shard_path(prepared, m, _shard_key(m, metrics, params, prepared,
                                                                               len(data)))) for m in methods}
    todo = [m for m in methods if done.get(m) is None]
    tasks = [ShardTask(prepared.profile, prepared.dataset, prepared.model_kind, str(prepared.device), m,
                       tuple(metrics), force, registration(prepared.dataset)) for m in todo]
    if tasks:
        done.update(zip(todo, score_on_cluster(address, tasks, progress=progress,
                                               desc=f"{chapter}: {prepared.dataset} / {prepared.model_kind}")))
    return [done[m] for m in methods]


def _cache_key(chapter: str, methods: list[str], metrics: list[str], prepared: Prepared) -> str:
    key = {"chapter": chapter, "methods": methods, "metrics": metrics, "profile": prepared.profile.as_dict(),
           "dataset": prepared.dataset, "model": prepared.record["digest"], "code": code_hash(*SCORING_MODULES)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def sample_coords(prepared: Prepared, data: SampleSet) -> dict:
    prob = predict_proba(prepared.model, data.images).numpy()  # on the model's device, returned on the CPU
    area = data.box_masks().float().mean(dim=(1, 2)).numpy()
    return {
        "lesion_area_fraction": lesion_area_fraction(data.finding_masks).numpy(),
        "lesion_contrast": lesion_contrast(data.images, data.finding_masks).numpy(),
        "sample_id": np.asarray(data.meta.get("sample_id", [f"{data.name}-{i}" for i in range(len(data))]), str),
        "label": data.labels.numpy(),
        "finding": np.asarray(data.meta.get("finding", ["unknown"] * len(data)), str),
        "box_area_fraction": area,
        "probability": prob,
        "correct": (prob >= 0.5) == (data.labels.numpy() == 1),
    }


def cube_path(profile: str, chapter: str, dataset: str, model: str = DEFAULT_MODEL) -> Path:
    """Where a chapter's cube for one data set and model kind lives:
    ``results/<profile>/cubes/<chapter>--<dataset>--<model>.nc``."""
    return cubes_dir(profile) / f"{chapter}--{dataset}--{model}.nc"


def run_methods(prepared: Prepared, methods: list[str], *, chapter: str, metrics: list[str] | None = None,
                force: bool = False, progress: bool = True) -> xr.Dataset:
    """The chapter's cube for one data set and model: computed, or read back when an up-to-date one is on disk.

    The cube is ``cube_path(profile, chapter, dataset, model kind)``; it is up to date when its ``cache_key``
    attribute matches the chapter, methods, metrics, profile, model and the scoring code (``SCORING_MODULES``
    and what they import) of this call. Otherwise each method's scores come from its shard
    (``cached_score_method``) when another chapter or an earlier run scored it the same way, and are computed
    otherwise; ``force`` recomputes everything. A method the model cannot serve is kept with NaN scores and its
    reason in the cube's ``not_applicable`` variable.
    """
    metrics = list(metrics or (*DEFAULT_METRICS, *prepared.profile.extra_metrics))
    unknown = [m for m in methods if m not in EXPLAINERS] + [m for m in metrics if split_name(m)[0] not in METRICS]
    if unknown:
        raise KeyError(f"unknown methods or metrics: {', '.join(unknown)}")
    path = cube_path(prepared.profile.name, chapter, prepared.dataset, prepared.model_kind)
    key = _cache_key(chapter, methods, metrics, prepared)
    cached = None if force else load_if_current(path, key, read=read_cube)
    if cached is not None:
        return cached

    data = prepared.explained
    params = metric_params(prepared.profile, data)
    inputs = data_inputs_for(prepared.splits["train"], data)
    scores, seconds, reasons, curves = zip(*score_shards(prepared, data, methods, metrics, params, inputs,
                                                         chapter=chapter, force=force, progress=progress))
    attrs = provenance(prepared.profile.name, prepared.profile.seed, str(prepared.device))
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
    cube = make_cube(dataset=prepared.dataset, model=prepared.model_label, model_kind=prepared.model_kind,
                     methods=[EXPLAINERS[m] for m in methods], metrics=[metric_spec(m) for m in metrics],
                     scores=np.stack(scores), seconds_per_image=np.asarray(seconds), not_applicable=reasons,
                     pointing_curve=np.stack(curves), tolerances=list(DEFAULT_CURVE_FRACTIONS),
                     samples=sample_coords(prepared, data), model_record=prepared.record, metric_params=params,
                     attrs=attrs)
    write_cube(cube, path)
    return read_cube(Path(path))


def chapter_datasets(data: str = "") -> list[str]:
    """The data sets a method chapter scores: ``EMBEDDED_DATASETS``, then each real data set named in ``data``.

    ``data`` is what ``medlit book --data`` (or ``make book DATA=...``) passes to every chapter: comma-separated
    ``adapter=folder[:key=value...]`` items such as ``"nih-cxr14=/data/nih:errors=skip"``
    (``medlit.data.adapters.parse_data_option``). Each is registered as a data set on the way, which checks its
    files (annotations parsed, images listed, a sample opened) and raises on bad data before anything trains.
    """
    names = list(EMBEDDED_DATASETS)
    if data.strip():
        from medlit.data.adapters import parse_data_options, register_real_dataset

        names.extend(register_real_dataset(item.name, item.root, **item.options) for item in parse_data_options(data))
    return names


def chapter_cube_paths(profile: str, real_data: str = "") -> list[Path]:
    """The cube files the method chapters wrote for this run's data sets (``chapter_datasets(real_data)``),
    in data-set order, every model kind of each; cubes of data sets not in this run (an earlier ``--data``) are
    left out."""
    paths = []
    for dataset in chapter_datasets(real_data):
        paths.extend(sorted(cubes_dir(profile).glob(f"*--{dataset}--*.nc")))
    return paths


def run_chapter(profile: str | Profile, methods: list[str], *, chapter: str, datasets: list[str],
                models: tuple[str, ...] = (DEFAULT_MODEL,), metrics: list[str] | None = None,
                device: str | None = None, progress: bool = False) -> tuple[xr.Dataset, dict[str, Prepared]]:
    """Score ``methods`` with every model kind in ``models`` on every data set in ``datasets``: one shard (cube
    file) per (data set, model), merged along the ``model`` and ``dataset`` dimensions.

    Returns the merged cube and the ``Prepared`` (data and model) of each data set for the first model kind;
    ``prepare`` gives the others.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    prepared = {}
    for name in datasets:
        with phase("data"):
            splits = load_dataset(name, profile)  # one copy of the images for every model kind
        for kind in models:
            prepared[name, kind] = prepare(profile, name, model=kind, device=device, progress=progress, splits=splits)
    cubes = [run_methods(p, methods, chapter=chapter, metrics=metrics, progress=progress) for p in prepared.values()]
    return merge_cubes(cubes), {name: prepared[name, models[0]] for name in datasets}
