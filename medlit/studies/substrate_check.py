"""What "removing" a finding does to the model, for each substrate the faithfulness metrics could use.

Deletion replaces the most relevant pixels by a substrate and expects the class probability to fall. That
only rewards maps that find the lesion if the substrate removes the evidence. On a radiograph, black is not
"absence": a black patch inside a lung is itself an anomaly. This check fills the exact finding mask with
each substrate and reports the model's probability, so a reader can see which substrate deletes evidence.
"""

from __future__ import annotations

import pandas as pd
import torch

from medlit.data.sample import SampleSet
from medlit.models.training import predict_proba
from medlit.perturbation import substrate_fill


def substrate_fills(data: SampleSet) -> dict[str, torch.Tensor]:
    """Each substrate as a full image stack: black, the insertion metric's blur, and each image's mean
    intensity (per channel) inside its anatomy mask (the lung fields, the retina)."""
    x = data.images
    return {
        "black (deletion's substrate)": substrate_fill(x, "zeros"),
        "blurred (insertion's substrate)": substrate_fill(x, "blur"),
        "mean of the anatomy mask": substrate_fill(x, "anatomy_mean", data.anatomy_masks),
    }


def finding_removal(model, data: SampleSet) -> pd.DataFrame:
    """Mean probability of the positive class with the exact finding pixels replaced by each substrate.

    One row per substrate plus the untouched images; ``n`` is the number of images (positives only).
    """
    positives = data.subset((data.labels == 1).numpy())
    mask = positives.finding_masks[:, None]
    rows = [{"finding pixels replaced by": "nothing (original image)",
             "mean probability of finding": float(predict_proba(model, positives.images).mean())}]
    for name, fill in substrate_fills(positives).items():
        removed = torch.where(mask, fill, positives.images)
        rows.append({"finding pixels replaced by": name,
                     "mean probability of finding": float(predict_proba(model, removed).mean())})
    table = pd.DataFrame(rows)
    table["n"] = len(positives)
    return table
