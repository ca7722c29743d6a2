"""Data sets by name: each entry turns a profile into train/val/test ``SampleSet`` splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medlit.profiles import Profile
from medlit.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set.

    Attributes
    ----------
    loader : profile -> {"train": SampleSet, "val": ..., "test": ...}
    data_card : file name under ``data_cards/``
    source_modules : medlit modules whose code determines the data (part of every model and cube cache key)
    fingerprint : for data read from files, a short hash of those files (annotation tables, image list), so that
        a change of the user's files invalidates the cached models and cubes; empty for generated data
    kind : ``"embedded"`` (generated offline, the default data) or ``"real"`` (read by an adapter)
    """

    name: str
    loader: Callable[[Profile], dict]
    description: str
    data_card: str
    source_modules: tuple[str, ...]
    fingerprint: str = ""
    kind: str = "embedded"


DATASETS: Registry[DatasetSpec] = Registry("data set")


def register_dataset(name: str, *, description: str, data_card: str, source_modules: tuple[str, ...],
                     fingerprint: str = "", kind: str = "embedded"):
    def decorate(loader: Callable) -> Callable:
        DATASETS.add(name, DatasetSpec(name, loader, description, data_card, source_modules, fingerprint, kind))
        return loader

    return decorate


def load_dataset(name: str, profile: Profile) -> dict:
    """The train/val/test splits of data set ``name`` at the sizes of ``profile``."""
    return DATASETS[name].loader(profile)
