"""The embedded default data sets, generated offline and deterministically.

Each generator has the signature ``make(n, *, size, seed, split, progress=False) -> SampleSet``; the splits of one
seed are disjoint draws (different patients, crops or lesions).
"""

from __future__ import annotations

from medlit.data.cache import cached_split
from medlit.data.registry import register_dataset
from medlit.profiles import Profile


def _splits(make, profile: Profile, **kwargs) -> dict:
    sizes = {"train": profile.n_train, "val": profile.n_val, "test": profile.n_test}
    return {split: cached_split(make, n, size=profile.image_size, seed=profile.seed, split=split, **kwargs)
            for split, n in sizes.items()}


@register_dataset("cxr-phantom", description="procedural chest radiograph phantom with inserted findings",
                  data_card="cxr_phantom.md", source_modules=("data/phantom.py", "data/sample.py"))
def cxr_phantom_splits(profile: Profile, confounder_strength: float = 0.0) -> dict:
    from medlit.data.phantom import make_cxr_phantom

    splits = _splits(make_cxr_phantom, profile)
    if confounder_strength:
        splits["train"] = cached_split(make_cxr_phantom, profile.n_train, size=profile.image_size, seed=profile.seed,
                                       split="train", confounder_strength=confounder_strength)
    return splits


@register_dataset("fundus-lesions", description="real fundus photograph (scikit-image) with inserted DR lesions",
                  data_card="fundus_lesions.md", source_modules=("data/fundus.py", "data/sample.py"))
def fundus_lesion_splits(profile: Profile) -> dict:
    from medlit.data.fundus import make_fundus_lesions

    return _splits(make_fundus_lesions, profile)


@register_dataset("ct-lesions", description="real head CT slices (pydicom) with inserted lesions",
                  data_card="ct_lesions.md", source_modules=("data/ct.py", "data/dicom.py", "data/sample.py"))
def ct_lesion_splits(profile: Profile) -> dict:
    from medlit.data.ct import make_ct_lesions

    return _splits(make_ct_lesions, profile)
