"""The embedded default data sets, generated offline and deterministically."""

from __future__ import annotations

from medlit.data.registry import register_dataset
from medlit.profiles import Profile


@register_dataset("cxr-phantom", description="procedural chest radiograph phantom with inserted findings",
                  data_card="cxr_phantom.md", source_modules=("data/phantom.py", "data/sample.py"))
def cxr_phantom_splits(profile: Profile, confounder_strength: float = 0.0) -> dict:
    from medlit.data.phantom import make_cxr_phantom

    sizes = {"train": profile.n_train, "val": profile.n_val, "test": profile.n_test}
    return {split: make_cxr_phantom(n, size=profile.image_size, seed=profile.seed, split=split,
                                    confounder_strength=confounder_strength if split == "train" else 0.0)
            for split, n in sizes.items()}
