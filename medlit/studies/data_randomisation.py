"""The data randomisation test of {cite}`adebayo2018sanity`: maps of a model that learned the task against maps of
a model of the same kind, trained with the same recipe on shuffled training labels.

A model trained on permuted labels can only memorise its training images; it has nothing to say about where the
finding is. A method whose maps on the two models look alike is describing the image (or the architecture), not
what the model learned from the labels.

Conventions (see ``medlit.studies.randomisation`` for the maps, SSIM and Spearman):

* **The shuffled-label model**: ``ModelConfig.label_shuffle_seed`` set, everything else (seed, initial weights,
  batch order, epochs) as the real model's, so that the labels are the only difference; its record shows chance
  accuracy on the real test labels. Sharing the initial weights can only make the two models' maps more alike,
  so the test errs towards "fails".
* **Null and verdict**: as the parameter randomisation check (``VERDICT_RULE``): a method depends on the labels
  the model learned when, paired by image, null - observed SSIM has a 95 % bootstrap interval above 0, with the
  null the similarity of its maps on two independently initialised networks. The null of an untrained pair is
  the only one affordable (a second shuffled-label model costs a training run); it says how alike two maps are
  that share only the image.
* **Localisation**: the raw maps on both models are scored with the localisation metrics, so that "method X
  localises 0.70 on the trained model and 0.55 on one that learned nothing" can be read off.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm.auto import tqdm

from medlit.explain import EXPLAINERS, data_inputs_for, not_applicable_reason, positive_class
from medlit.models import ModelConfig, load_or_train
from medlit.studies.cache import run_study
from medlit.studies.randomisation import (
    CONVENTIONS,
    MEASURES,
    VERDICT_RULE,
    add_localisation,
    explain_timed,
    interval_vars,
    localisation_metrics,
    localisation_scores,
    normalise_maps,
    null_based_verdict,
    null_maps_similarity,
    pair_similarity,
)
from medlit.timing import phase

DEFAULT_SHUFFLE_SEED = 0


def shuffled_label_config(config: ModelConfig | dict, shuffle_seed: int = DEFAULT_SHUFFLE_SEED) -> ModelConfig:
    """``config`` (a ``ModelConfig`` or a model record's ``config``) trained on labels shuffled with
    ``shuffle_seed`` instead of the real ones."""
    config = config if isinstance(config, ModelConfig) else ModelConfig(**config)
    if config.label_shuffle_seed is not None:
        raise ValueError(f"model {config.name} already trains on shuffled labels; the test needs the real model")
    return dataclasses.replace(config, label_shuffle_seed=shuffle_seed)


def shuffled_label_model(prepared, shuffle_seed: int = DEFAULT_SHUFFLE_SEED, *, progress: bool = True
                         ) -> tuple[torch.nn.Module, dict]:
    """The model of ``prepared``'s kind trained on its data set with shuffled training labels, and its record
    (trained once and cached by ``load_or_train`` like any model; about one training run of the profile)."""
    config = shuffled_label_config(prepared.record["config"], shuffle_seed)
    with phase("models"):
        return load_or_train(config, prepared.splits, device=prepared.device, progress=progress)


def data_randomisation(model, shuffled_model, x: torch.Tensor, target: torch.Tensor, explainer_names: list[str],
                       *, seed: int = 0, batch_size: int = 32, regions: torch.Tensor | None = None,
                       localisation: list[str] | None = None, localisation_params: dict | None = None,
                       data_inputs: dict | None = None, replicates: int = 1000, progress: bool = True
                       ) -> xr.Dataset:
    """Similarity of each method's maps on ``model`` and on ``shuffled_model``, with the null.

    Returns
    -------
    A Dataset with ``similarity`` (explainer, measure, sample), the similarity of the maps on the two models, and
    ``null_similarity`` (explainer, measure, sample) (``null_maps_similarity`` of ``model``), each with
    ``_mean``/``_low``/``_high`` (95 % bootstrap interval over images); with ``regions``, ``localisation``
    (explainer, model, metric, sample), ``model`` being ``"trained"`` or ``"shuffled_labels"``, and its summaries.
    Coordinates ``family``, ``seconds`` (explaining time per method, null included) and ``not_applicable``.
    """
    names = list(explainer_names)
    for name in names:
        EXPLAINERS[name]  # fail early on an unknown name
    reasons = [not_applicable_reason(name, model) for name in names]
    metrics = list(localisation if localisation is not None else localisation_metrics()) if regions is not None else []
    similarity = np.full((len(names), len(MEASURES), len(x)), np.nan)
    located = np.full((len(names), 2, len(metrics), len(x)), np.nan)
    seconds = np.zeros(len(names))
    for i, name in enumerate(tqdm(names, desc="data randomisation", disable=not progress)):
        if reasons[i]:
            seconds[i] = np.nan
            continue
        raws = []
        for k, network in enumerate((model, shuffled_model)):
            raw, t = explain_timed(name, network, x, target, batch_size=batch_size, data_inputs=data_inputs)
            seconds[i] += t
            raws.append(raw)
            if metrics:
                located[i, k] = localisation_scores(raw, regions, metrics, localisation_params)
        similarity[i] = pair_similarity(normalise_maps(raws[0]), normalise_maps(raws[1]))
    null, null_seconds = null_maps_similarity(model, x, target, names, seed=seed, batch_size=batch_size,
                                              data_inputs=data_inputs, progress=progress)
    data_vars = {
        "similarity": (("explainer", "measure", "sample"), similarity,
                       {"long_name": "similarity of the maps on the trained and the shuffled-label model",
                        "direction": "lower is better"}),
        **interval_vars("similarity", similarity, ("explainer", "measure"), replicates, seed,
                        "similarity to the shuffled-label model's map"),
        "null_similarity": (("explainer", "measure", "sample"), null,
                            {"long_name": "similarity of the maps on two independently initialised networks"}),
        **interval_vars("null_similarity", null, ("explainer", "measure"), replicates, seed,
                        "similarity between two independently initialised networks"),
    }
    coords = {"explainer": names, "measure": list(MEASURES), "sample": np.arange(len(x)),
              "family": ("explainer", [EXPLAINERS[n].family for n in names]),
              "seconds": ("explainer", seconds + null_seconds), "not_applicable": ("explainer", reasons)}
    if metrics:
        add_localisation(data_vars, coords, located, metrics, "shuffled_labels", replicates, seed)
    attrs = {"seed": seed, "conventions": CONVENTIONS, "citation": "adebayo2018sanity", "bootstrap": replicates,
             "localisation_params": json.dumps(localisation_params or {}, sort_keys=True)}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def data_randomisation_verdict(ds: xr.Dataset) -> pd.DataFrame:
    """Per explainer: mean similarity to the shuffled-label model's maps (``ssim_observed``), the null
    (``ssim_null``), their paired gap with its interval, and ``depends_on_model`` by ``VERDICT_RULE`` (here: on the
    labels the model learned); ``changes`` is the same column under the name ``sanity_verdict`` callers read.
    ``shuffled_test_accuracy`` repeats the shuffled model's accuracy (it should be near chance)."""
    table = null_based_verdict(ds["similarity"], ds["null_similarity"], ds["family"].values,
                               replicates=int(ds.attrs.get("bootstrap", 1000)), seed=int(ds.attrs.get("seed", 0)))
    table["rule"] = VERDICT_RULE.replace("the fully randomised network", "the shuffled-label model")
    if "shuffled_test_accuracy" in ds.attrs:
        table["shuffled_test_accuracy"] = float(ds.attrs["shuffled_test_accuracy"])
    return table


def run_data_randomisation_check(prepared, methods: list[str], *, chapter: str,
                                 shuffle_seed: int = DEFAULT_SHUFFLE_SEED,
                                 localisation_params: dict | None = None, force: bool = False,
                                 progress: bool = True) -> xr.Dataset:
    """The data randomisation test of ``methods`` on the first ``profile.n_sanity`` explained images of
    ``prepared`` (a ``medlit.benchmark.Prepared``), cached through ``run_study``.

    The shuffled-label model is trained on first use (``shuffled_label_model``) and cached with the models; the
    study's key names its digest. Localisation uses every localisation metric with its defaults, or the settings
    ``localisation_params`` gives (metric -> keywords).
    """
    from medlit.benchmark import positive_subset

    data = positive_subset(prepared.splits["test"], prepared.profile.n_sanity)
    metrics = localisation_metrics()
    params = {k: v for k, v in (localisation_params or {}).items() if k in metrics}
    shuffled, record = shuffled_label_model(prepared, shuffle_seed, progress=progress)

    def compute() -> xr.Dataset:
        ds = data_randomisation(prepared.model, shuffled, data.images, positive_class(len(data)), methods,
                                seed=prepared.profile.seed, regions=data.box_masks(), localisation=metrics,
                                localisation_params=params,
                                data_inputs=data_inputs_for(prepared.splits["train"], data),
                                replicates=prepared.profile.bootstrap, progress=progress)
        ds.attrs.update({"shuffled_model": record["name"], "shuffled_model_digest": record["digest"],
                         "shuffled_test_accuracy": record["test_accuracy"],
                         "shuffled_test_auroc": record["test_auroc"],
                         "real_test_accuracy": prepared.record["test_accuracy"]})
        return ds

    settings = {"methods": list(methods), "shuffle_seed": shuffle_seed, "shuffled_model": record["digest"],
                "localisation": metrics, "localisation_params": params, "n_images": len(data)}
    return run_study(prepared, chapter=chapter, study="data-randomisation", settings=settings,
                     code_module=__name__, compute=compute, force=force)
