"""Cascading model-parameter randomisation, the sanity check of {cite}`adebayo2018sanity`.

The layers of the model are re-initialised from the top (output) down, cumulatively, and each method's maps on
the randomised models are compared with its maps on the original model. A method whose maps depend on what
the model learned must change; a method whose maps survive randomisation of the whole network (an edge
detector, a centre prior) explains the image, not the model.

Conventions (medlit's choices; Adebayo et al. report several variants):

* **Layer groups**: the top-level children of ``model.net`` that hold parameters, in definition order, a
  normalisation layer merged with the layer before it; the cascade runs through them in reverse. For the
  MONAI ResNet: ``fc``, ``layer4``, ``layer3``, ``layer2``, ``layer1``, ``conv1+bn1`` (the stem).
* **Re-initialisation**: each submodule's own ``reset_parameters()`` (PyTorch's default initialisers; batch
  norm also resets its running statistics), under ``torch.manual_seed(1000 * seed + step)`` in a forked RNG,
  on a deep copy: the caller's model is never modified.
* **Comparison**: absolute value, then min-max normalisation of each map to [0, 1]. Adebayo et al. report
  both signed and absolute maps; medlit's headline is the absolute one, so signed methods are compared by
  magnitude. A constant map (e.g. a Grad-CAM that the ReLU zeroes everywhere) becomes all zeros, and two
  constant maps have SSIM 1.
* **SSIM** on the normalised maps: Gaussian window sigma = 1.5 truncated at 3.5 sigma (11 x 11),
  K1 = 0.01, K2 = 0.03, data range 1, population covariances, averaged over the pixels whose window lies
  inside the image, as ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``.
* **Spearman** rank correlation of the normalised maps (ties get average ranks, as ``scipy.stats.spearmanr``);
  undefined (NaN) when either map is constant.
* **Null**: the similarity of a method's maps on two independently initialised networks of the same kind
  (copies re-initialised as above, under seeds ``1000 * seed + 500`` and ``+ 501``): how similar two maps are
  when they share only the image and the architecture. The random control is seeded by the image, so its null is
  1, like its observed similarity: it fails, as it must.
* **Verdict**: a method "depends on the model" when, paired by image, the mean of null - observed SSIM
  (observed: trained versus fully randomised network) has a 95 % bootstrap interval above 0; otherwise it
  "fails" when the interval holds 0; when it lies below 0 (the maps of two untrained networks are less alike
  than the trained model's and a random one's: degenerate maps such as all-zero Grad-CAMs) the null is no fair
  reference and the verdict is "undecided". This asks whether the trained model's maps stand out from those of an arbitrary network of the same
  kind; a method whose maps on unrelated networks are already unlike each other (a low null) and equally unlike
  the trained model's fails too: its map carries no more of what the model learned than of any initialisation.
  Both numbers are reported, with the first cascade step at which the similarity is clearly below the null.
* **Steps**: the whole cascade, or, for methods too expensive for it (``steps="auto"``: more than
  ``AUTO_FULL_ABOVE_PASSES`` passes per image), only the fully randomised network, which is the same network as
  the cascade's last step.
* **Localisation of the randomised model**: the raw maps on the trained and on the fully randomised network are
  scored with the localisation metrics, a model-free baseline for each method: what it localises from the image
  and the architecture alone.
"""

from __future__ import annotations

import contextlib
import copy
import json

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr
from tqdm.auto import tqdm

from medlit.explain import EXPLAINERS, data_inputs_for, explain_batched, not_applicable_reason, positive_class
from medlit.metrics import METRICS
from medlit.stats import bootstrap_mean_ci, paired_bootstrap_difference
from medlit.studies.cache import run_study

_NORMS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)

CONVENTIONS = ("maps: absolute value, then min-max normalised to [0, 1] per map (constant map -> 0); "
               "ssim: Gaussian window sigma 1.5 (11x11), K1 0.01, K2 0.03, data_range 1, population covariance, "
               "mean over valid window positions (skimage structural_similarity, gaussian_weights=True, "
               "use_sample_covariance=False); spearman: average ranks for ties, NaN for a constant map; "
               "randomisation: cumulative from the output layer down, reset_parameters() of each submodule "
               "under torch.manual_seed(1000 * seed + step), on a deep copy of the model")


def randomisation_cascade(model) -> list[tuple[str, list[str]]]:
    """The layer groups, from the output down: ``[(label, [qualified module names]), ...]``.

    The groups are the top-level children of ``model.net`` (or of ``model`` when it has no ``net``) that hold
    parameters, a normalisation layer joining the group of the layer before it.
    """
    root, prefix = (model.net, "net.") if hasattr(model, "net") else (model, "")
    groups: list[list[str]] = []
    for name, child in root.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, _NORMS) and groups:
            groups[-1].append(name)
        else:
            groups.append([name])
    return [("+".join(names), [prefix + n for n in names]) for names in reversed(groups)]


def _reinitialise(module: torch.nn.Module) -> None:
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """|map|, min-max scaled to [0, 1] per map (N, H, W); a constant map becomes zeros. Float64."""
    maps = maps.abs().double()
    lo = maps.flatten(1).amin(dim=1)[:, None, None]
    span = maps.flatten(1).amax(dim=1)[:, None, None] - lo
    return torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, 1.0), torch.zeros_like(maps))


def _gaussian_window(sigma: float, truncate: float, dtype, device) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    window = torch.exp(-offsets**2 / (2 * sigma**2))
    return window / window.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean structural similarity of each pair of maps (N, H, W) -> (N,), batched, float64.

    Gaussian-weighted local statistics (window of radius ``int(3.5 sigma + 0.5)``), population covariances,
    averaged over the window positions that lie inside the image: the same number as
    ``skimage.metrics.structural_similarity(a, b, data_range=..., gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False)``.
    """
    a, b = a.double()[:, None], b.double()[:, None]
    w = _gaussian_window(sigma, 3.5, a.dtype, a.device)
    if min(a.shape[-2:]) < len(w):
        raise ValueError(f"maps must be at least {len(w)} pixels on each side, got {tuple(a.shape[-2:])}")

    def blur(t):  # separable filter, 'valid' positions only (skimage crops the border away)
        return F.conv2d(F.conv2d(t, w.view(1, 1, -1, 1)), w.view(1, 1, 1, -1))

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..P along the last axis of (N, P), ties sharing their average rank (scipy's ``rankdata``)."""
    ordered = values.sort(dim=-1).values.contiguous()
    below = torch.searchsorted(ordered, values.contiguous(), right=False)
    up_to = torch.searchsorted(ordered, values.contiguous(), right=True)
    return (below + up_to + 1).double() / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (N, ...) -> (N,), average ranks for ties, float64.

    NaN where either map is constant (the correlation is undefined).
    """
    ra, rb = average_ranks(a.flatten(1).double()), average_ranks(b.flatten(1).double())
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    denominator = torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))  # exactly sum(ra*ra) when ra == rb
    return torch.where(denominator > 0, (ra * rb).sum(dim=1) / denominator, torch.nan)




# Methods whose forward + backward passes per image exceed this run only the full randomisation (plus the null)
# under ``steps="auto"``: the perturbation family, Score-CAM and feature ablation. The cascade costs
# (groups + 1) map sets per method, the full randomisation two; the null adds two in both cases.
AUTO_FULL_ABOVE_PASSES = 64
STEP_CHOICES = ("cascade", "full")
MEASURES = ("ssim", "spearman")
# Seeds of the two independently initialised networks of the null, offset from the cascade's 1000 * seed + step
# (step < 500) so that no null network shares a seed with a cascade step.
NULL_SEED_OFFSETS = (500, 501)


def resolve_steps(names: list[str], steps: str | dict = "cascade",
                  max_cascade_passes: int = AUTO_FULL_ABOVE_PASSES) -> dict[str, str]:
    """Per method, ``"cascade"`` (every step) or ``"full"`` (only the fully randomised network).

    Parameters
    ----------
    steps : ``"cascade"`` or ``"full"`` for every method; ``"auto"``: ``"full"`` for a method whose
        ``forward_passes + backward_passes`` per image exceed ``max_cascade_passes``, else ``"cascade"``; or a
        dict method -> choice (methods it leaves out are ``"auto"``).
    """
    def auto(name: str) -> str:
        spec = EXPLAINERS[name]
        return "full" if spec.forward_passes + spec.backward_passes > max_cascade_passes else "cascade"

    chosen = {}
    for name in names:
        choice = steps.get(name, "auto") if isinstance(steps, dict) else steps
        choice = auto(name) if choice == "auto" else choice
        if choice not in STEP_CHOICES:
            raise ValueError(f"steps for {name!r} must be 'cascade', 'full' or 'auto', not {choice!r}")
        chosen[name] = choice
    return chosen


@contextlib.contextmanager
def _forked_seed(model: torch.nn.Module, seed: int):
    """Seed torch's RNG with ``seed`` inside the block; the caller's CPU and CUDA streams are restored after."""
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def independent_network(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """An untrained network of ``model``'s kind: a deep copy with every submodule re-initialised under ``seed``.

    The same initialisers as the cascade's re-initialisation (``reset_parameters()``), so that the null compares
    networks made the way the fully randomised one is; buffers without an initialiser (the input normalisation)
    are kept. The caller's model and RNG streams are untouched.
    """
    network = copy.deepcopy(model)
    with _forked_seed(network, seed):
        _reinitialise(network)
    return network


def pair_similarity(reference: torch.Tensor, maps: torch.Tensor) -> np.ndarray:
    """(measure, sample) SSIM and Spearman of two sets of normalised maps (``normalise_maps``)."""
    return np.stack([ssim(reference, maps).numpy(), spearman(reference, maps).numpy()])


def localisation_scores(maps: torch.Tensor, regions: torch.Tensor, metrics: list[str],
                        params: dict | None = None) -> np.ndarray:
    """(metric, sample) scores of raw ``maps`` by localisation metrics of ``medlit.metrics.METRICS``.

    ``params`` maps a metric to its keyword settings; a metric it does not name gets its defaults.
    """
    params = params or {}
    rows = []
    for name in metrics:
        spec = METRICS[name]
        if spec.kind != "localisation":
            raise ValueError(f"metric {name!r} is a {spec.kind} metric; only localisation metrics score maps alone")
        rows.append(torch.as_tensor(spec.fn(maps, regions, **params.get(name, {})), dtype=torch.float64).numpy())
    return np.stack(rows) if rows else np.empty((0, len(maps)))


def localisation_metrics() -> list[str]:
    """Every registered localisation metric, in registration order."""
    return [name for name in METRICS if METRICS[name].kind == "localisation"]


def bootstrap_summary(values: np.ndarray, *, replicates: int = 1000, seed: int = 0) -> np.ndarray:
    """(..., 3) mean, low, high of the 95 % percentile bootstrap interval over the last axis (images).

    NaN values are left out (``medlit.stats.bootstrap_mean_ci``); fewer than two valid values give a NaN interval.
    """
    flat = values.reshape(-1, values.shape[-1])
    out = np.array([bootstrap_mean_ci(row, replicates=replicates, seed=seed)[:3] for row in flat])
    return out.reshape(*values.shape[:-1], 3)


def interval_vars(name: str, values: np.ndarray, dims: tuple[str, ...], replicates: int, seed: int,
                  long_name: str) -> dict:
    """``{name}_mean``, ``{name}_low``, ``{name}_high`` variables over ``dims`` (``values`` has a last sample axis)."""
    summary = bootstrap_summary(values, replicates=replicates, seed=seed)
    return {f"{name}_{part}": (dims, summary[..., k], {"long_name": f"{long_name}: {label}"})
            for k, (part, label) in enumerate((("mean", "mean over images"),
                                               ("low", "95% bootstrap interval, low"),
                                               ("high", "95% bootstrap interval, high")))}



def add_localisation(data_vars: dict, coords: dict, located: np.ndarray, metrics: list[str], other_model: str,
                     replicates: int, seed: int) -> None:
    """Put the localisation scores (explainer, model, metric, sample) of the maps on the trained model and on
    ``other_model`` (the model that learned nothing), with their intervals, into a check's variables and coords."""
    data_vars["localisation"] = (("explainer", "model", "metric", "sample"), located,
                                 {"long_name": "localisation score of the raw map"})
    data_vars.update(interval_vars("localisation", located, ("explainer", "model", "metric"), replicates, seed,
                                   "localisation score"))
    coords.update({"model": ["trained", other_model], "metric": metrics})

def explain_timed(name: str, model, x, target, *, batch_size: int = 32, data_inputs: dict | None = None
                  ) -> tuple[torch.Tensor, float]:
    """Raw maps (N, H, W) of ``name`` on ``model`` and the seconds they took (``explain_batched``)."""
    return explain_batched(name, model, x, target, batch_size=batch_size, data_inputs=data_inputs)


def null_maps_similarity(model, x: torch.Tensor, target: torch.Tensor, names: list[str], *, seed: int = 0,
                         batch_size: int = 32, data_inputs: dict | None = None, progress: bool = False
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The null: similarity of each method's maps on two independently initialised networks of ``model``'s kind.

    Returns (similarity[explainer, measure, sample], seconds[explainer]). The networks are
    ``independent_network(model, 1000 * seed + offset)`` for the offsets in ``NULL_SEED_OFFSETS``; two maps on
    them share only the image (and the architecture), so their similarity is what "unrelated to what a model
    learned" looks like for that method. A method the model cannot serve gets NaN.
    """
    networks = [independent_network(model, 1000 * seed + offset) for offset in NULL_SEED_OFFSETS]
    similarity = np.full((len(names), len(MEASURES), len(x)), np.nan)
    seconds = np.zeros(len(names))
    for i, name in enumerate(tqdm(names, desc="null networks", disable=not progress)):
        if not_applicable_reason(name, model):
            seconds[i] = np.nan
            continue
        maps = []
        for network in networks:
            m, t = explain_timed(name, network, x, target, batch_size=batch_size, data_inputs=data_inputs)
            maps.append(normalise_maps(m))
            seconds[i] += t
        similarity[i] = pair_similarity(*maps)
    return similarity, seconds


def cascading_randomisation(model, x: torch.Tensor, target: torch.Tensor, explainer_names: list[str], *,
                            seed: int = 0, batch_size: int = 32, progress: bool = True,
                            steps: str | dict = "cascade", null: bool = False, regions: torch.Tensor | None = None,
                            localisation: list[str] | None = None, localisation_params: dict | None = None,
                            data_inputs: dict | None = None, replicates: int = 1000) -> xr.Dataset:
    """Similarity of each method's maps on cumulatively randomised models to its maps on ``model``.

    Parameters
    ----------
    steps : which steps each method runs (``resolve_steps``): ``"cascade"`` (all), ``"full"`` (only the fully
        randomised network: the same network as the cascade's last step, for a fraction of the cost), ``"auto"``
        or a per-method dict. Steps a method skips hold NaN.
    data_inputs : what data-input controls need (``medlit.explain.data_inputs_for``), passed to every explainer
    null : also compute the null (``null_maps_similarity``), which ``sanity_verdict`` decides with
    regions : (N, H, W) bool ground truth; when given, the raw maps on the trained and on the fully randomised
        model are scored with the ``localisation`` metrics (default: every localisation metric), each with its
        ``localisation_params`` (default: the metric's defaults)
    replicates : bootstrap replicates of the intervals over images

    Returns
    -------
    A Dataset with ``similarity`` (explainer, randomised, measure, sample) and its ``similarity_mean``/``_low``/
    ``_high`` (95 % bootstrap interval over images); ``randomised`` labels the steps ``"none"`` (the original
    model; similarity 1 by construction), ``"fc"``, ``"+layer4"``, ... (each step adds one more group, see
    ``randomisation_cascade``); ``measure`` is ``"ssim"`` or ``"spearman"``. With ``null``: ``null_similarity``
    (explainer, measure, sample) and its summaries. With ``regions``: ``localisation`` (explainer, model, metric,
    sample), ``model`` being ``"trained"`` or ``"randomised"``, and its summaries. Coordinates ``steps`` (per
    method), ``seconds`` (explaining time per method, null included) and ``not_applicable`` (why a method could
    not run on this model, "" otherwise; its values are NaN). Conventions are in the module docstring and in the
    ``conventions`` attribute.
    """
    names = list(explainer_names)
    for name in names:
        EXPLAINERS[name]  # fail early on an unknown name
    chosen = resolve_steps(names, steps)
    reasons = [not_applicable_reason(name, model) for name in names]
    cascade = randomisation_cascade(model)
    labels = ["none"] + [label if i == 0 else "+" + label for i, (label, _) in enumerate(cascade)]
    last = len(labels) - 1
    metrics = list(localisation if localisation is not None else localisation_metrics()) if regions is not None else []
    working = copy.deepcopy(model)  # explain_batched sets eval mode; even that must not touch the caller's model
    similarity = np.full((len(names), len(labels), len(MEASURES), len(x)), np.nan)
    located = np.full((len(names), 2, len(metrics), len(x)), np.nan)
    seconds = np.zeros(len(names))
    reference = {}
    for step in tqdm(range(len(labels)), desc="randomisation cascade", disable=not progress):
        if step > 0:
            with _forked_seed(working, 1000 * seed + step):  # leave the caller's RNG streams as they were
                for module_name in cascade[step - 1][1]:
                    _reinitialise(working.get_submodule(module_name))
        for i, name in enumerate(names):
            if reasons[i] or (chosen[name] == "full" and step not in (0, last)):
                continue
            raw, t = explain_timed(name, working, x, target, batch_size=batch_size, data_inputs=data_inputs)
            seconds[i] += t
            maps = normalise_maps(raw)
            if step == 0:
                reference[name] = maps
            similarity[i, step] = pair_similarity(reference[name], maps)
            if metrics and step in (0, last):
                located[i, 0 if step == 0 else 1] = localisation_scores(raw, regions, metrics, localisation_params)
    seconds[[bool(r) for r in reasons]] = np.nan
    data_vars = {
        "similarity": (("explainer", "randomised", "measure", "sample"), similarity,
                       {"long_name": "similarity to the original model's map", "direction": "lower is better"}),
        **interval_vars("similarity", similarity, ("explainer", "randomised", "measure"), replicates, seed,
                        "similarity to the original model's map"),
    }
    if null:
        null_similarity, null_seconds = null_maps_similarity(model, x, target, names, seed=seed,
                                                             batch_size=batch_size, data_inputs=data_inputs,
                                                             progress=progress)
        seconds += null_seconds
        data_vars["null_similarity"] = (("explainer", "measure", "sample"), null_similarity,
                                        {"long_name": "similarity of the maps on two independently initialised "
                                                      "networks (the null)"})
        data_vars.update(interval_vars("null_similarity", null_similarity, ("explainer", "measure"), replicates,
                                       seed, "similarity between two independently initialised networks"))
    coords = {"explainer": names, "randomised": labels, "measure": list(MEASURES), "sample": np.arange(len(x)),
              "family": ("explainer", [EXPLAINERS[n].family for n in names]),
              "steps": ("explainer", [chosen[n] for n in names]),
              "seconds": ("explainer", seconds),
              "not_applicable": ("explainer", reasons),
              "n_groups_randomised": ("randomised", np.arange(len(labels))),
              "added_modules": ("randomised", ["", *[",".join(mods) for _, mods in cascade]])}
    if metrics:
        add_localisation(data_vars, coords, located, metrics, "randomised", replicates, seed)
    attrs = {"seed": seed, "conventions": CONVENTIONS, "citation": "adebayo2018sanity", "bootstrap": replicates,
             "null_seeds": json.dumps([1000 * seed + o for o in NULL_SEED_OFFSETS]) if null else "",
             "localisation_params": json.dumps(localisation_params or {}, sort_keys=True)}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _row_means(values: np.ndarray) -> np.ndarray:
    """Mean of each row over its non-NaN values; NaN for a row without any (no warning)."""
    valid = np.isfinite(values)
    total = np.where(valid, values, 0.0).sum(axis=-1)
    count = valid.sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# The verdict's words. A gap clearly below 0 (the maps of two untrained networks are less alike than the trained
# model's and a random network's, e.g. Grad-CAMs that the ReLU zeroes on one random network and not on the other)
# says the null is no fair reference for that method, not that the method ignores the model: it is "undecided",
# and ``depends_on_model`` is False for it, as for "fails".
DEPENDS, FAILS, UNDECIDED, NOT_CHECKED = ("depends on the model", "fails", "undecided: null below observed",
                                          "not applicable")

VERDICT_RULE = ("depends on the model when the mean over images of (null - observed) SSIM, paired by image, has a "
                "95% bootstrap interval above 0: observed is the similarity of the maps on the trained and the fully "
                "randomised network, the null that of the maps on two independently initialised networks; it fails "
                "when the interval holds 0, and is undecided when the interval lies below 0 (the null is then no "
                "fair reference)")


def null_gap(observed: np.ndarray, null: np.ndarray, *, replicates: int = 1000, seed: int = 0
             ) -> tuple[float, float, float, int]:
    """Mean over images of ``null - observed`` (paired by image) with its 95 % bootstrap interval, and n.

    A positive gap whose interval lies above 0 says the trained model's maps are further from a random
    network's than two random networks' maps are from each other: what the model learned shows in its maps.
    """
    return paired_bootstrap_difference(np.asarray(null), np.asarray(observed), replicates=replicates, seed=seed)


def null_based_verdict(observed: xr.DataArray, null: xr.DataArray, family, *, replicates: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """Per explainer, the observed and null similarity (mean and interval) and the gap verdict of ``VERDICT_RULE``.

    ``observed`` and ``null`` are (explainer, measure, sample). Columns per measure ``m`` (``ssim``,
    ``spearman``): ``m_observed``, ``m_null`` (means), ``m_gap`` with ``m_gap_low``/``m_gap_high``; then
    ``depends_on_model`` (decided on SSIM), ``changes`` (the same, kept for the callers of the fixed-threshold
    verdict) and ``verdict`` in words: ``DEPENDS``, ``FAILS``, ``UNDECIDED`` (gap interval below 0) or
    ``NOT_CHECKED`` (a method the model cannot serve: NaN values, ``depends_on_model`` False).
    """
    rows = {}
    for measure in MEASURES:
        obs, nul = observed.sel(measure=measure).values, null.sel(measure=measure).values
        gaps = np.array([null_gap(o, n, replicates=replicates, seed=seed)[:3] for o, n in zip(obs, nul)])
        rows[f"{measure}_observed"], rows[f"{measure}_null"] = _row_means(obs), _row_means(nul)
        rows[f"{measure}_gap"], rows[f"{measure}_gap_low"], rows[f"{measure}_gap_high"] = gaps.T
    table = pd.DataFrame({"family": np.asarray(family), **rows},
                         index=pd.Index(observed["explainer"].values, name="explainer"))
    low, high = table["ssim_gap_low"].to_numpy(), table["ssim_gap_high"].to_numpy()
    table["depends_on_model"] = np.nan_to_num(low, nan=-np.inf) > 0
    table["changes"] = table["depends_on_model"]
    table["verdict"] = np.select([np.isnan(table["ssim_gap"].to_numpy()), table["depends_on_model"].to_numpy(),
                                  np.nan_to_num(high, nan=np.inf) < 0], [NOT_CHECKED, DEPENDS, UNDECIDED],
                                 default=FAILS)
    return table


def first_step_below_null(ds: xr.Dataset, explainer: str, *, measure: str = "ssim") -> str:
    """The first cascade step at which ``explainer``'s similarity is clearly below the null (``null_gap``'s
    interval above 0): ``"fc"``, ``"+layer4"``, ...; ``"never"`` when no step is; ``""`` when the method ran only
    the full randomisation or has no null."""
    if "null_similarity" not in ds or str(ds["steps"].sel(explainer=explainer).values) != "cascade":
        return ""
    null = ds["null_similarity"].sel(explainer=explainer, measure=measure).values
    sim = ds["similarity"].sel(explainer=explainer, measure=measure)
    replicates, seed = int(ds.attrs.get("bootstrap", 1000)), int(ds.attrs.get("seed", 0))
    for label in ds["randomised"].values[1:]:
        low = null_gap(sim.sel(randomised=label).values, null, replicates=replicates, seed=seed)[1]
        if np.isfinite(low) and low > 0:
            return str(label)
    return "never"


def sanity_verdict(ds: xr.Dataset, threshold: float = 0.5) -> pd.DataFrame:
    """Per explainer: the similarities after randomising the top group and the whole network, and the verdict.

    With a null in ``ds`` (``cascading_randomisation(..., null=True)``, which ``run_randomisation_check`` runs)
    the verdict follows ``VERDICT_RULE``: ``depends_on_model`` is True when the mean paired gap null - observed
    (SSIM, trained versus fully randomised network) has a 95 % bootstrap interval above 0; the table gives both
    numbers (``ssim_full`` and ``ssim_null``), the gap and its interval, and ``first_step_below_null``, the first
    step of the cascade at which the maps are clearly further from the trained model's than the null. Without a
    null (a result computed before it existed) the old convention decides: mean SSIM after full randomisation
    below ``threshold``. ``changes`` equals ``depends_on_model`` either way; ``verdict`` says it in words
    (``null_based_verdict``), ``rule`` says which rule decided.
    Spearman means ignore undefined (NaN) samples.
    """
    sim = ds["similarity"]
    top, full = sim.isel(randomised=1), sim.isel(randomised=-1)
    table = pd.DataFrame({
        "family": ds["family"].values,
        "steps": ds["steps"].values if "steps" in ds.coords else "cascade",
        "ssim_top": _row_means(top.sel(measure="ssim").values),
        "ssim_full": _row_means(full.sel(measure="ssim").values),
        "spearman_top": _row_means(top.sel(measure="spearman").values),
        "spearman_full": _row_means(full.sel(measure="spearman").values),
    }, index=pd.Index(ds["explainer"].values, name="explainer"))
    if "similarity_low" in ds:
        table["ssim_full_low"] = ds["similarity_low"].isel(randomised=-1).sel(measure="ssim").values
        table["ssim_full_high"] = ds["similarity_high"].isel(randomised=-1).sel(measure="ssim").values
    if "null_similarity" not in ds:
        table["depends_on_model"] = table["ssim_full"] < threshold
        table["changes"] = table["depends_on_model"]
        table["verdict"] = np.where(table["depends_on_model"], DEPENDS, FAILS)
        table["rule"] = f"mean SSIM after full randomisation below {threshold} (no null computed)"
        return table
    decided = null_based_verdict(full, ds["null_similarity"], ds["family"].values,
                                 replicates=int(ds.attrs.get("bootstrap", 1000)), seed=int(ds.attrs.get("seed", 0)))
    table["ssim_null"] = decided["ssim_null"]
    table["ssim_null_low"] = ds["null_similarity_low"].sel(measure="ssim").values
    table["ssim_null_high"] = ds["null_similarity_high"].sel(measure="ssim").values
    table["spearman_null"] = decided["spearman_null"]
    for column in ("ssim_gap", "ssim_gap_low", "ssim_gap_high", "spearman_gap", "depends_on_model", "changes",
                   "verdict"):
        table[column] = decided[column]
    table["first_step_below_null"] = [first_step_below_null(ds, name) for name in table.index]
    table["rule"] = VERDICT_RULE
    return table


def run_randomisation_check(prepared, methods: list[str], *, chapter: str, steps: str | dict = "auto",
                            localisation_params: dict | None = None, n_images: int | None = None,
                            force: bool = False, progress: bool = True) -> xr.Dataset:
    """Model-parameter randomisation of ``methods`` on the first ``n_images`` (default ``profile.n_sanity``) explained
    images of
    ``prepared`` (a ``medlit.benchmark.Prepared``), with the null and the localisation of the randomised model,
    cached through ``run_study``.

    ``steps`` (``resolve_steps``): ``"auto"`` runs the whole cascade for cheap methods and only the full
    randomisation for those above ``AUTO_FULL_ABOVE_PASSES`` passes per image (the perturbation family).
    Localisation uses every localisation metric with its defaults, or the settings ``localisation_params`` gives
    (metric -> keywords, e.g. the pipeline's ``medlit.benchmark.metric_params`` to match the chapter's tables).
    """
    from medlit.benchmark import positive_subset

    data = positive_subset(prepared.splits["test"], n_images or prepared.profile.n_sanity)
    metrics = localisation_metrics()
    params = {k: v for k, v in (localisation_params or {}).items() if k in metrics}
    chosen = resolve_steps(list(methods), steps)

    def compute() -> xr.Dataset:
        return cascading_randomisation(prepared.model, data.images, positive_class(len(data)), methods,
                                       seed=prepared.profile.seed, progress=progress, steps=chosen, null=True,
                                       regions=data.box_masks(), localisation=metrics, localisation_params=params,
                                       data_inputs=data_inputs_for(prepared.splits["train"], data),
                                       replicates=prepared.profile.bootstrap)

    settings = {"methods": list(methods), "steps": chosen, "null": True, "localisation": metrics,
                "localisation_params": params, "n_images": len(data)}
    return run_study(prepared, chapter=chapter, study="randomisation", settings=settings,
                     code_module=__name__, compute=compute, force=force)
