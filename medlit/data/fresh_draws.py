"""More training images from the embedded generators: fresh, disjoint draws of the training distribution.

The embedded data sets are generated, so a model that needs more images than the profile's training split (a
vision transformer learns the task from scratch far more slowly than a CNN) can have them at the price of
generating them. Draw ``k`` of a data set is ``split="train-draw<k>"`` of its generator under the profile's seed:
a split of its own, so its images are other patients, crops and lesions than those of train, val and test
(``medlit.data.seeding.split_seed``). Draws are cached like every generated split (``medlit.data.cache``).
Real data sets have no generator and no draws.
"""

from __future__ import annotations

from medlit.data.cache import cached_split
from medlit.data.sample import SampleSet


def _generators() -> dict:
    from medlit.data.ct import make_ct_lesions
    from medlit.data.fundus import make_fundus_lesions
    from medlit.data.phantom import make_cxr_phantom

    return {"cxr-phantom": make_cxr_phantom, "fundus-lesions": make_fundus_lesions, "ct-lesions": make_ct_lesions}


def has_fresh_draws(dataset: str) -> bool:
    """Whether ``dataset`` is generated, so that more training images can be drawn from it."""
    return dataset in _generators()


def fresh_training_draw(dataset: str, index: int, n: int, *, size: int, seed: int,
                        confounder_strength: float = 0.0) -> SampleSet:
    """Draw ``index`` (1, 2, ...) of ``n`` training images of generated data set ``dataset``.

    ``confounder_strength`` is passed to the phantom's generator (the planted marker), as for its training split.

    Raises
    ------
    ValueError
        if ``dataset`` has no generator (a real data set) or ``index`` is below 1 (draw 0 is the training split).
    """
    if index < 1:
        raise ValueError(f"fresh draw index must be 1 or more (0 is the training split itself), got {index}")
    generators = _generators()
    if dataset not in generators:
        raise ValueError(f"data set {dataset!r} is not generated: it has no fresh training draws "
                         f"(generated: {', '.join(generators)})")
    kwargs = {"confounder_strength": confounder_strength} if confounder_strength else {}
    return cached_split(generators[dataset], n, size=size, seed=seed, split=f"train-draw{index}", **kwargs)
