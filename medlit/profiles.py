"""Run profiles: how big every piece of the benchmark is.

``smoke`` is for tests and nbval (seconds per chapter), ``quick`` is the default book build on a 2-core CPU,
``full`` is meant for one GPU (``--device cuda``): 256 px, five times the training images and a larger explained
set, sized so that the GPU's larger batches (``medlit.device``) keep the whole book well under an hour; that
sizing is an estimate from the quick profile's pass counts, not yet a measured build. A chapter's ``parameters`` cell names the profile; papermill injects it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Profile:
    name: str
    image_size: int  # phantom images are rendered at this size (square)
    n_train: int
    n_val: int
    n_test: int
    epochs: int
    batch_size: int
    n_explain: int  # positive test images explained and scored per method
    # Insertion/deletion curve resolution (pixels per step = H*W / steps). The curves cost one forward pass per
    # step and dominate a chapter's time; on the quick profile's models 32 steps give AUCs within 0.03 of 64
    # steps' on average (Spearman >= 0.996 per image, scripts/bench_curve_steps.py).
    deletion_steps: int
    bootstrap: int  # bootstrap replicates for confidence intervals
    n_sanity: int  # positive test images used by the randomisation sanity check
    seed: int = 0
    # Data sets explained on fewer images than n_explain, to keep a profile's time budget: (name, count) pairs.
    n_explain_by_dataset: tuple = ()
    # Metrics scored beside medlit.benchmark.DEFAULT_METRICS (ROAD's imputation costs a linear solve per image and
    # step, too much for the CPU profiles' time budget).
    extra_metrics: tuple = ()
    # Model kinds explained on at most this many images of any data set: (kind, count) pairs. They are the first
    # images of the data set's explained ones, so a comparison with another model pairs them image by image; the
    # other images hold NaN for this model in a merged cube.
    n_explain_by_model: tuple = ()

    def explain_count(self, dataset: str, model: str | None = None) -> int:
        """How many positive test images of ``dataset`` are explained and scored under this profile (by model kind
        ``model``, when given)."""
        count = dict(self.n_explain_by_dataset).get(dataset, self.n_explain)
        return min(count, dict(self.n_explain_by_model).get(model, count))

    def as_dict(self) -> dict:
        settings = asdict(self)
        if not self.n_explain_by_model:  # left out when unused, so that cache keys made before it was added hold
            del settings["n_explain_by_model"]
        return settings

    def with_seed(self, seed: int) -> "Profile":
        return replace(self, seed=seed)


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", image_size=64, n_train=320, n_val=64, n_test=96, epochs=2, batch_size=32,
                     n_explain=8, deletion_steps=16, bootstrap=200, n_sanity=4),
    "quick": Profile("quick", image_size=128, n_train=2400, n_val=400, n_test=600, epochs=12, batch_size=64,
                     n_explain=96, deletion_steps=32, bootstrap=1000, n_sanity=16,
                     n_explain_by_dataset=(("fundus-lesions", 48),),
                     # the ViT's forward costs twice the CNN's: its chapter fits the budget on half the phantom's images
                     n_explain_by_model=(("vit", 48),)),
    "full": Profile("full", image_size=256, n_train=12000, n_val=1000, n_test=2000, epochs=30, batch_size=64,
                    n_explain=500, deletion_steps=128, bootstrap=1000, n_sanity=64, extra_metrics=("road_morf",)),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
