"""Data sets by name: each entry turns a profile into train/val/test ``SampleSet`` splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medlit.profiles import Profile
from medlit.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Callable[[Profile], dict]  # profile -> {"train": SampleSet, "val": ..., "test": ...}
    description: str
    data_card: str  # file name under data_cards/
    source_modules: tuple[str, ...]  # medlit modules whose code determines the data (for cache keys)


DATASETS: Registry[DatasetSpec] = Registry("data set")


def register_dataset(name: str, *, description: str, data_card: str, source_modules: tuple[str, ...]):
    def decorate(loader: Callable) -> Callable:
        DATASETS.add(name, DatasetSpec(name, loader, description, data_card, source_modules))
        return loader

    return decorate


def load_dataset(name: str, profile: Profile) -> dict:
    """The train/val/test splits of data set ``name`` at the sizes of ``profile``."""
    return DATASETS[name].loader(profile)
