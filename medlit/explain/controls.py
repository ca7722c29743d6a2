"""Control maps: what any method must beat to have localised anything.

Each control uses no model. The random map is the floor; the centre prior is the pointing-game "centre
baseline" of {cite}`zhang2018excitation`. They look at neither the image nor the data set, and a reviewer found
that they are too easy to beat, so three controls that do look at one or the other stand beside them:

- the **edge map** looks at the image only: its high-pass energy inside the organ. A method that ties it has
  found the image's structure, not what the model uses;
- the **anatomy prior** knows where the organ is, nothing about the image;
- the **box prior** knows where findings usually are (the training split's boxes), nothing about the image.

The last three take data inputs (``medlit.explain.registry`` module docstring), built from a prepared data set
by ``medlit.explain.data_inputs.data_inputs_for``.
"""

from __future__ import annotations

import torch

from medlit.explain.registry import register_explainer
from medlit.explain.seeding import image_generator
from medlit.perturbation import blurred

# The edge map's blur: sigma = 1/25 of the shorter side (5.1 px at 128 px), the project's ``blurred`` image.
EDGE_SIGMA_FRACTION = 1 / 25
# The box prior's smoothing: sigma = 3 px at 128 px, scaled with the shorter side of the image.
BOX_PRIOR_SIGMA_PX_AT_128 = 3.0


def _check_anatomy(name: str, x: torch.Tensor, anatomy_masks: torch.Tensor) -> torch.Tensor:
    """The (B, H, W) anatomy masks of images ``x`` as float32, after checking their shape."""
    expected = (x.shape[0], *x.shape[-2:])
    if tuple(anatomy_masks.shape) != expected:
        raise ValueError(f"control {name!r}: anatomy_masks has shape {tuple(anatomy_masks.shape)}, "
                         f"expected {expected} (one mask per image, at image resolution)")
    return anatomy_masks.to(device=x.device, dtype=torch.float32)


@register_explainer("random", family="control", citation="", long_name="Random map (control, no model)",
                    forward_passes=0)
def random_map(model, x: torch.Tensor, target: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Independent uniform noise per pixel, reproducible from ``seed`` and the image content."""
    # Seeded from the image content, so that a given image gets the same map whatever batch it is in.
    return torch.stack([torch.rand(x.shape[-2:], generator=image_generator(image, seed)) for image in x]).to(x.device)


@register_explainer("centre_prior", family="control", citation="zhang2018excitation",
                    long_name="Centre prior (control, no model)", forward_passes=0)
def centre_prior(model, x: torch.Tensor, target: torch.Tensor, sigma_fraction: float = 0.25) -> torch.Tensor:
    """An isotropic Gaussian centred on the image, sigma = ``sigma_fraction`` of the shorter side."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, dtype=torch.float32, device=x.device) - (h - 1) / 2
    cols = torch.arange(w, dtype=torch.float32, device=x.device) - (w - 1) / 2
    sigma = sigma_fraction * min(h, w)
    bump = torch.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * sigma**2))
    return bump.expand(x.shape[0], h, w).clone()


@register_explainer("edge_map", family="control", citation="", long_name="Edge map (control, no model)",
                    forward_passes=0, data_inputs=("anatomy_masks",))
def edge_map(model, x: torch.Tensor, target: torch.Tensor, *, anatomy_masks: torch.Tensor,
             sigma_fraction: float = EDGE_SIGMA_FRACTION) -> torch.Tensor:
    """The image's high-pass energy inside its anatomy mask: ``sum_c |x_c - blur(x)_c| * anatomy``.

    ``blur`` is :func:`medlit.perturbation.blurred`: a sampled, normalised Gaussian of sigma = ``sigma_fraction``
    of the shorter side (5.12 px, kernel 13 px at 128 px; 1.28 px, kernel 7 px at 32 px), borders reflected, so
    a constant image has no edges. No model is used: a method that does not beat this map has found where the
    image has structure (vessels, exudates, rib edges), not what the model looks at.
    """
    anatomy = _check_anatomy("edge_map", x, anatomy_masks)
    high_pass = (x - blurred(x, sigma_fraction)).abs().sum(dim=1)  # channels summed: one map for RGB as for grey
    return (high_pass * anatomy).float()


@register_explainer("anatomy_prior", family="control", citation="", long_name="Anatomy prior (control, no model)",
                    forward_passes=0, data_inputs=("anatomy_masks",))
def anatomy_prior(model, x: torch.Tensor, target: torch.Tensor, *, anatomy_masks: torch.Tensor) -> torch.Tensor:
    """The image's anatomy mask itself, 1.0 inside the organ and 0.0 outside, unsmoothed.

    Deliberately flat: the map knows where the organ is and nothing more, so it ranks every organ pixel alike. A
    smoothed mask would peak at the organ's deepest point, a different prior (the organ's centre) that the
    centre and box priors already bracket. A metric that reads the maximum or a ranking must treat the tie
    fairly (the pointing game takes the expectation over the tied set); with ties broken in row-major order, the
    flat map would point at the organ's top-left pixel instead.
    """
    return _check_anatomy("anatomy_prior", x, anatomy_masks).clone()


@register_explainer("box_prior", family="control", citation="", long_name="Box prior (control, no model)",
                    forward_passes=0, data_inputs=("box_prior",))
def box_prior_map(model, x: torch.Tensor, target: torch.Tensor, *, box_prior: torch.Tensor,
                  sigma_px_at_128: float = BOX_PRIOR_SIGMA_PX_AT_128) -> torch.Tensor:
    """Where findings usually are: the training split's mean box mask, smoothed, the same map for every image.

    ``box_prior`` is the (H, W) fraction of the training split's boxed positive images whose box covers each
    pixel (``medlit.explain.data_inputs.box_frequency``). It is blurred with :func:`medlit.perturbation.blurred`
    at sigma = ``sigma_px_at_128`` px per 128 px of the shorter side (3 px, kernel 13 px at 128 px), borders
    reflected, which turns the union of box edges into a smooth density. It sees neither the image nor the model:
    a method below it has localised less than the data set's habits.
    """
    h, w = x.shape[-2:]
    if tuple(box_prior.shape) != (h, w):
        raise ValueError(f"control 'box_prior': the prior has shape {tuple(box_prior.shape)}, but the images are "
                         f"{h} x {w}; build it from a training split at the explained images' resolution")
    prior = box_prior.to(device=x.device, dtype=torch.float32)[None, None]
    smooth = blurred(prior, sigma_fraction=sigma_px_at_128 / 128)[0, 0]
    return smooth.expand(x.shape[0], h, w).clone()
