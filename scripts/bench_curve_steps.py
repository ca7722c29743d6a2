"""How much the insertion/deletion scores move when the curves take fewer steps (run by hand, needs trained models).

    .venv/bin/python scripts/bench_curve_steps.py [--profile quick] [--steps 64 32] [--images 48]
                                                  [--methods saliency gradcam ...]

The curves cost one forward pass per step and image, and dominate a chapter's scoring time, so a profile's
``deletion_steps`` trades resolution for time. For each data set, method and curve this prints the mean score at
every step count, the largest per-image difference from the finest one and the Spearman correlation of the
per-image scores with it. Models come from the cache (``medlit train``); maps are computed on the CPU.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import spearmanr

from medlit.benchmark import EMBEDDED_DATASETS, prepare
from medlit.explain import explain_batched, positive_class
from medlit.explain.data_inputs import data_inputs_for
from medlit.metrics.faithfulness import deletion_auc, insertion_auc

DEFAULT_METHODS = ("saliency", "integrated_gradients", "gradcam", "occlusion", "centre_prior", "random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--steps", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--images", type=int, default=48, help="explained images per data set")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    args = parser.parse_args()
    finest, *coarser = sorted(args.steps, reverse=True)
    print(f"{'data set':15s} {'method':22s} {'curve':10s} " + " ".join(f"{'mean@' + str(s):>9s}" for s in
                                                                      [finest, *coarser])
          + "  max|diff|  Spearman (coarsest vs finest)")
    for dataset in EMBEDDED_DATASETS:
        prepared = prepare(args.profile, dataset, device="cpu", progress=False)
        data = prepared.explained
        data = data.subset(np.arange(min(args.images, len(data))))
        target = positive_class(len(data))
        inputs = data_inputs_for(prepared.splits["train"], data)
        for method in args.methods:
            maps, _ = explain_batched(method, prepared.model, data.images, target, data_inputs=inputs)
            for curve, fn in (("insertion", insertion_auc), ("deletion", deletion_auc)):
                scores = [fn(prepared.model, data.images, target, maps, steps=s).numpy() for s in [finest, *coarser]]
                ref, last = scores[0], scores[-1]
                both = ~np.isnan(ref) & ~np.isnan(last)
                rho = spearmanr(ref[both], last[both])[0] if both.sum() > 2 else float("nan")
                means = " ".join(f"{np.nanmean(s):9.4f}" for s in scores)
                print(f"{dataset:15s} {method:22s} {curve:10s} {means}  {np.nanmax(np.abs(ref - last)):9.4f}  "
                      f"{rho:.4f}", flush=True)


if __name__ == "__main__":
    main()
