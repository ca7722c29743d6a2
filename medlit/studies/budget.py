"""How a perturbation method's scores move as its budget (masks, samples, window) grows."""

from __future__ import annotations

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from medlit.explain import explain_batched, positive_class
from medlit.metrics import METRICS
from medlit.studies.cache import run_study

BUDGET_METRICS = ("pointing_game", "energy_pointing_game", "insertion_auc", "deletion_auc")


def run_budget_study(prepared, budgets: dict[str, tuple[str, list]], *, chapter: str,
                     metrics: tuple[str, ...] = BUDGET_METRICS, force: bool = False,
                     progress: bool = True) -> xr.Dataset:
    """Scores of each method as its perturbation budget grows, on the first ``profile.n_sanity`` explained images.

    ``budgets`` maps a method to (setting name, values), e.g. ``{"rise": ("n_masks", [250, 500, 1000])}``.
    Returns (and caches through ``run_study``) a Dataset with ``score`` (explainer, budget, metric, sample),
    ``seconds_per_image`` (explainer, budget) and the setting's value per (explainer, budget).
    """
    from medlit.benchmark import metric_params, positive_subset, score_maps

    plan = {m: [setting, list(values)] for m, (setting, values) in budgets.items()}

    def compute() -> xr.Dataset:
        data = positive_subset(prepared.splits["test"], prepared.profile.n_sanity)
        params = metric_params(prepared.profile, data)
        target = positive_class(len(data))
        steps = max(len(values) for _, values in budgets.values())
        scores = np.full((len(budgets), steps, len(metrics), len(data)), np.nan, np.float32)
        seconds = np.full((len(budgets), steps), np.nan)
        setting_value = np.full((len(budgets), steps), np.nan)
        bar = tqdm(total=sum(len(v) for _, v in budgets.values()), desc=f"{chapter}: budgets",
                   disable=not progress)
        for i, (method, (setting, values)) in enumerate(budgets.items()):
            for j, value in enumerate(values):
                maps, t = explain_batched(method, prepared.model, data.images, target, **{setting: value})
                scores[i, j] = score_maps(prepared.model, data, maps, list(metrics), params)
                seconds[i, j], setting_value[i, j] = t / len(data), value
                bar.update(1)
        bar.close()
        return xr.Dataset(
            {"score": (("explainer", "budget", "metric", "sample"), scores, {"long_name": "explanation score"}),
             "seconds_per_image": (("explainer", "budget"), seconds, {"units": "s"}),
             "setting_value": (("explainer", "budget"), setting_value,
                               {"long_name": "value of the method's budget setting"})},
            coords={"explainer": list(budgets), "budget": np.arange(steps), "metric": list(metrics),
                    "sample": np.arange(len(data)),
                    "setting": ("explainer", [setting for setting, _ in budgets.values()]),
                    "direction": ("metric", [METRICS[m].direction for m in metrics])})

    return run_study(prepared, chapter=chapter, study="budget", settings={"budgets": plan, "metrics": list(metrics)},
                     code_module=__name__, compute=compute, force=force)
