"""The data inputs of explainers (``medlit.explain.registry.DATA_INPUTS``), built from a prepared data set.

``data_inputs_for(train, explained)`` gives every input a registered explainer may declare, ready for
``explain_batched(..., data_inputs=...)``: the explained images' anatomy masks and the training split's box prior.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # medlit.data registers every data set on import: not needed to build inputs
    from medlit.data.sample import SampleSet


def box_frequency(train: SampleSet) -> torch.Tensor | None:
    """(H, W) float32: the fraction of ``train``'s positive images that carry a box whose box mask covers each
    pixel (``SampleSet.box_masks``, the union of an image's boxes); None when no positive image has a box.

    Positives without a box (labels mined from reports) are left out: they say nothing about where findings
    are, and counting them would only scale the map.
    """
    boxed = ~torch.isnan(train.boxes[..., 0]).all(dim=1)
    chosen = (train.labels == 1) & boxed
    if not bool(chosen.any()):
        return None
    return train.subset(torch.nonzero(chosen).flatten().numpy()).box_masks().float().mean(dim=0)


def data_inputs_for(train: SampleSet, explained: SampleSet) -> dict[str, torch.Tensor]:
    """Every data input of ``DATA_INPUTS``, for explaining the images of ``explained``.

    Returns
    -------
    dict
        ``anatomy_masks``: (N, H, W) bool, ``explained.anatomy_masks`` (one per explained image);
        ``box_prior``: (H, W) float32, :func:`box_frequency` of ``train``. It is left out when the training
        split has no boxed positive image, so that only the explainers that need it fail, each with
        ``MissingDataInput`` naming it (``missing_data_inputs`` tells beforehand).

    Raises
    ------
    ValueError
        if the two sets' images differ in size (the prior would not align with the explained images).
    """
    if train.image_size != explained.image_size:
        raise ValueError(f"data_inputs_for: training images are {train.image_size} but explained images are "
                         f"{explained.image_size}; the box prior needs one resolution")
    inputs = {"anatomy_masks": explained.anatomy_masks}
    prior = box_frequency(train)
    if prior is not None:
        inputs["box_prior"] = prior
    return inputs
