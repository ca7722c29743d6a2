"""What "removing" a finding does to the model, for each substrate the faithfulness metrics could use.

Deletion replaces the most relevant pixels by a substrate and expects the explained score to fall. That only
rewards maps that find the lesion if the substrate removes the evidence. On a radiograph, black is not "absence":
a black patch inside a lung is itself an anomaly (blacking out the fundus lesions *raised* p(finding) from 0.875 to
0.983). This check fills the exact finding mask with each substrate (black, the protocol blur, the image mean, the
anatomy mean, ROAD's noisy linear imputation) and reports the model's explained score (the target's centred logit,
:func:`medlit.explain.targets.explained_score`) and probability, so a reader can see which substrate deletes
evidence; :func:`inverted_metrics` turns the table into the list of faithfulness metrics whose verdicts should not
be printed for a data set.
"""

from __future__ import annotations

import pandas as pd
import torch
import xarray as xr

from medlit.data.sample import SampleSet
from medlit.explain.targets import explained_score, positive_class
from medlit.imputation import noisy_linear_imputation
from medlit.metrics.faithfulness import MIN_DROP
from medlit.perturbation import PROTOCOL_SUBSTRATE, substrate_fill
from medlit.studies.cache import run_study

ORIGINAL = "nothing (original image)"

# Row label -> substrate name (the "substrate" column); "road" is medlit.imputation's noisy linear imputation.
FILL_NAMES = {
    "black (zeros)": "zeros",
    "blurred (the protocol substrate of insertion, deletion and the perturbation methods)": "blur",
    "mean intensity of each image": "mean",
    "mean of the anatomy mask": "anatomy_mean",
    "noisy linear imputation (ROAD)": "road",
}

# The substrate each faithfulness metric removes pixels with.
METRIC_SUBSTRATES = {"insertion_auc": PROTOCOL_SUBSTRATE, "deletion_auc": PROTOCOL_SUBSTRATE, "road_morf": "road"}


def substrate_fills(data: SampleSet) -> dict[str, torch.Tensor]:
    """Each substrate as a full image stack (row label of :data:`FILL_NAMES` -> images shaped like
    ``data.images``). ROAD's imputation depends on what is removed: here the finding mask of each image (an image
    without finding pixels is returned unchanged)."""
    x = data.images
    fills = {}
    for label, kind in FILL_NAMES.items():
        if kind == "road":
            removed = data.finding_masks & ~data.finding_masks.flatten(1).all(dim=1)[:, None, None]
            fills[label] = noisy_linear_imputation(x, removed)
        else:
            fills[label] = substrate_fill(x, kind, data.anatomy_masks)
    return fills


@torch.no_grad()
def _scores(model, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(explained score, probability) of the positive class for every image, in batches, model in eval mode."""
    was_training = model.training if isinstance(model, torch.nn.Module) else None
    if was_training is not None:
        model.eval()
    try:
        weight = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        device = images.device if weight is None else weight.device
        scores, probs = [], []
        for start in range(0, len(images), batch_size):
            logits = model(images[start:start + batch_size].to(device)).float()
            target = positive_class(len(logits), logits.device)
            scores.append(explained_score(logits, target).cpu())
            probs.append(torch.softmax(logits, dim=1)[:, 1].cpu())
    finally:
        if was_training is not None:
            model.train(was_training)
    return torch.cat(scores), torch.cat(probs)


def finding_removal(model, data: SampleSet) -> pd.DataFrame:
    """The positive class's mean explained score and probability with the exact finding pixels replaced by each
    substrate.

    One row per substrate plus the untouched images (first). Columns: ``finding pixels replaced by`` (a label),
    ``substrate`` (the name in :mod:`medlit.perturbation`, ``"road"``, or ``None`` for the original),
    ``mean explained score``, ``mean drop in explained score`` (original minus replaced, per image, averaged;
    positive = the substrate removes evidence), ``fraction of images lowered`` (share of images whose score fell by
    at least ``MIN_DROP["score"]``), ``mean probability of finding`` and ``n`` (positives only).
    """
    positives = data.subset((data.labels == 1).numpy())
    mask = positives.finding_masks[:, None]
    original, original_p = _scores(model, positives.images)
    rows = [{"finding pixels replaced by": ORIGINAL, "substrate": None,
             "mean explained score": float(original.mean()), "mean drop in explained score": 0.0,
             "fraction of images lowered": 0.0, "mean probability of finding": float(original_p.mean())}]
    for label, fill in substrate_fills(positives).items():
        score, prob = _scores(model, torch.where(mask, fill, positives.images))
        drop = original - score
        rows.append({"finding pixels replaced by": label, "substrate": FILL_NAMES[label],
                     "mean explained score": float(score.mean()), "mean drop in explained score": float(drop.mean()),
                     "fraction of images lowered": float((drop >= MIN_DROP["score"]).float().mean()),
                     "mean probability of finding": float(prob.mean())})
    table = pd.DataFrame(rows)
    table["n"] = len(positives)
    return table


# Every chapter shows the same table for the same model and data: it is computed once and kept under this name.
SHARED_CHAPTER = "shared"


def run_finding_removal(prepared, *, force: bool = False) -> pd.DataFrame:
    """:func:`finding_removal` on the test split of ``prepared`` (a ``medlit.benchmark.Prepared``), cached as a study
    that every chapter shares (``results/<profile>/checks/shared--finding-removal--<data set>--<model kind>.nc``)."""
    def compute() -> xr.Dataset:
        table = finding_removal(prepared.model, prepared.splits["test"])
        table["substrate"] = table["substrate"].fillna("")  # netCDF has no None
        return xr.Dataset.from_dataframe(table.rename_axis("row"))

    ds = run_study(prepared, chapter=SHARED_CHAPTER, study="finding-removal", settings={}, code_module=__name__,
                   compute=compute, force=force)
    table = ds.to_dataframe().reset_index(drop=True)
    table["substrate"] = table["substrate"].astype(object).where(table["substrate"] != "", None)
    return table


def _inverted_one(table: pd.DataFrame, min_drop: float) -> dict[str, str]:
    by_substrate = table.dropna(subset=["substrate"]).set_index("substrate")
    verdicts = {}
    for metric, substrate in METRIC_SUBSTRATES.items():
        if substrate not in by_substrate.index:
            continue
        row = by_substrate.loc[substrate]
        drop, label = float(row["mean drop in explained score"]), row["finding pixels replaced by"]
        if drop <= 0:
            verdicts[metric] = (f"replacing the finding pixels by {label} raises the explained score by "
                                f"{-drop:.2f} on average, so removing the finding does not remove evidence and "
                                f"{metric} would reward maps that miss the finding")
        elif drop < min_drop:
            verdicts[metric] = (f"replacing the finding pixels by {label} lowers the explained score by only "
                                f"{drop:.2f} on average (less than {min_drop:g}), so {metric} cannot tell maps that "
                                f"find the finding from maps that miss it")
    return verdicts


def inverted_metrics(table: pd.DataFrame, min_drop: float = MIN_DROP["score"]) -> dict[str, dict[str, str]]:
    """Which faithfulness metric's substrate fails to lower the explained score when the finding is removed.

    Parameters
    ----------
    table : :func:`finding_removal` for one data set, or several concatenated with a ``data set`` column or index
        level (as :func:`medlit.summary.finding_removal_table` builds them)
    min_drop : the least mean drop of the explained score (original minus finding replaced) for which a metric's
        substrate counts as removing the evidence; default the curves' own :data:`MIN_DROP` ``["score"]``

    Returns
    -------
    dict data set -> {metric: reason}, one sentence per metric whose verdicts should not be printed on that data
    set; a data set whose substrates all work maps to ``{}``. A single-data-set table is returned under the key
    ``None``.
    """
    if "data set" in (table.index.names or []):
        table = table.reset_index()
    if "data set" not in table.columns:
        return {None: _inverted_one(table, min_drop)}
    return {name: _inverted_one(group, min_drop) for name, group in table.groupby("data set", sort=False)}
