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
* **Verdict**: a method "changes" when its mean SSIM after full randomisation is below 0.5, a convention,
  not a law; the whole curve is the result.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr
from tqdm.auto import tqdm

from medlit.explain import EXPLAINERS, explain_batched, positive_class
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


def cascading_randomisation(model, x: torch.Tensor, target: torch.Tensor, explainer_names: list[str], *,
                            seed: int = 0, batch_size: int = 32, progress: bool = True) -> xr.Dataset:
    """Similarity of each method's maps on cumulatively randomised models to its maps on ``model``.

    Returns a Dataset with ``similarity`` (explainer, randomised, measure, sample): ``randomised`` labels the
    steps ``"none"`` (the original model; similarity 1 by construction), ``"fc"``, ``"+layer4"``, ... (each
    step adds one more group, see ``randomisation_cascade``); ``measure`` is ``"ssim"`` or ``"spearman"``.
    Conventions are in the module docstring and in the ``conventions`` attribute.
    """
    names = list(explainer_names)
    for name in names:
        EXPLAINERS[name]  # fail early on an unknown name
    cascade = randomisation_cascade(model)
    steps = ["none"] + [label if i == 0 else "+" + label for i, (label, _) in enumerate(cascade)]
    working = copy.deepcopy(model)  # explain_batched sets eval mode; even that must not touch the caller's model
    similarity = np.empty((len(names), len(steps), 2, len(x)))
    reference = {}
    for step in tqdm(range(len(steps)), desc="randomisation cascade", disable=not progress):
        if step > 0:
            cuda = sorted({p.device.index or 0 for p in working.parameters() if p.device.type == "cuda"})
            with torch.random.fork_rng(devices=cuda):  # leave the caller's RNG streams as they were
                torch.manual_seed(1000 * seed + step)
                for module_name in cascade[step - 1][1]:
                    _reinitialise(working.get_submodule(module_name))
        for i, name in enumerate(names):
            maps = normalise_maps(explain_batched(name, working, x, target, batch_size=batch_size)[0])
            if step == 0:
                reference[name] = maps
            similarity[i, step, 0] = ssim(reference[name], maps).numpy()
            similarity[i, step, 1] = spearman(reference[name], maps).numpy()
    return xr.Dataset(
        {"similarity": (("explainer", "randomised", "measure", "sample"), similarity,
                        {"long_name": "similarity to the original model's map", "direction": "lower is better"})},
        coords={"explainer": names, "randomised": steps, "measure": ["ssim", "spearman"],
                "sample": np.arange(len(x)),
                "family": ("explainer", [EXPLAINERS[n].family for n in names]),
                "n_groups_randomised": ("randomised", np.arange(len(steps))),
                "added_modules": ("randomised", ["", *[",".join(mods) for _, mods in cascade]])},
        attrs={"seed": seed, "conventions": CONVENTIONS, "citation": "adebayo2018sanity"},
    )


def sanity_verdict(ds: xr.Dataset, threshold: float = 0.5) -> pd.DataFrame:
    """Per explainer: mean similarity after randomising the top group and the whole network, and the verdict.

    ``changes`` is True when the mean SSIM after full randomisation is below ``threshold`` (a convention, not
    a law): the method's maps depend on the learned parameters. Spearman means ignore undefined (NaN) samples.
    """
    sim = ds["similarity"]
    top, full = sim.isel(randomised=1), sim.isel(randomised=-1)
    table = pd.DataFrame({
        "family": ds["family"].values,
        "ssim_top": top.sel(measure="ssim").mean("sample").values,
        "ssim_full": full.sel(measure="ssim").mean("sample").values,
        "spearman_top": top.sel(measure="spearman").mean("sample", skipna=True).values,
        "spearman_full": full.sel(measure="spearman").mean("sample", skipna=True).values,
    }, index=pd.Index(ds["explainer"].values, name="explainer"))
    table["changes"] = table["ssim_full"] < threshold
    return table


def run_randomisation_check(prepared, methods: list[str], *, chapter: str, force: bool = False,
                            progress: bool = True) -> xr.Dataset:
    """Cascading model-parameter randomisation of ``methods`` on the first ``profile.n_sanity`` explained images
    of ``prepared`` (a ``medlit.benchmark.Prepared``), cached through ``run_study``."""
    from medlit.benchmark import positive_subset

    def compute() -> xr.Dataset:
        data = positive_subset(prepared.splits["test"], prepared.profile.n_sanity)
        return cascading_randomisation(prepared.model, data.images, positive_class(len(data)), methods,
                                       seed=prepared.profile.seed, progress=progress)

    return run_study(prepared, chapter=chapter, study="randomisation", settings={"methods": list(methods)},
                     code_module=__name__, compute=compute, force=force)
