"""The generated-data cache: a split read back equals the generated one, and a changed key or a bad file regenerates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlit.data import cache
from medlit.data.cache import cached_split, data_cache_dir
from medlit.data.fundus import make_fundus_lesions
from medlit.data.phantom import make_cxr_phantom


class Counting:
    """A generator wrapper that counts its calls (and keeps the wrapped generator's module for the code key)."""

    def __init__(self, make):
        self.make, self.calls = make, 0
        self.__module__, self.__name__ = make.__module__, make.__name__

    def __call__(self, n, **kwargs):
        self.calls += 1
        return self.make(n, **kwargs)


def assert_same_split(a, b):
    for name in ("images", "labels", "boxes", "finding_masks", "anatomy_masks"):
        got, expected = getattr(a, name), getattr(b, name)
        assert got.dtype == expected.dtype, name
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    assert a.meta.keys() == b.meta.keys()
    for key in a.meta:
        assert a.meta[key].dtype == b.meta[key].dtype, key
        np.testing.assert_array_equal(a.meta[key], b.meta[key])
    assert a.attrs == b.attrs and (a.name, a.split) == (b.name, b.split)


@pytest.mark.parametrize("make", [make_cxr_phantom, make_fundus_lesions])
def test_a_cached_split_reads_back_equal_and_is_generated_once(results, make):
    counting = Counting(make)
    first = cached_split(counting, 6, size=48, seed=0, split="test")
    second = cached_split(counting, 6, size=48, seed=0, split="test")
    assert counting.calls == 1
    assert_same_split(second, first)
    assert_same_split(second, make(6, size=48, seed=0, split="test"))
    assert len(list(data_cache_dir().glob("*.npz"))) == 1


def test_the_fundus_attributes_keep_their_tuples(results):
    cached_split(make_fundus_lesions, 2, size=48, seed=0, split="val")
    again = cached_split(make_fundus_lesions, 2, size=48, seed=0, split="val")
    assert isinstance(again.attrs["disc_centre_px"], tuple)


def test_other_arguments_make_another_entry(results):
    counting = Counting(make_cxr_phantom)
    cached_split(counting, 4, size=48, seed=0, split="test")
    cached_split(counting, 4, size=48, seed=1, split="test")
    cached_split(counting, 4, size=48, seed=0, split="train")
    assert counting.calls == 3 and len(list(data_cache_dir().glob("*.npz"))) == 3


def test_a_change_of_the_generators_code_regenerates(results, monkeypatch):
    counting = Counting(make_cxr_phantom)
    cached_split(counting, 4, size=48, seed=0, split="test")
    monkeypatch.setattr(cache, "code_hash", lambda *modules: "edited")
    cached_split(counting, 4, size=48, seed=0, split="test")
    assert counting.calls == 2


def test_an_unreadable_cache_file_is_reported_and_regenerated(results):
    counting = Counting(make_cxr_phantom)
    cached_split(counting, 4, size=48, seed=0, split="test")
    (path,) = data_cache_dir().glob("*.npz")
    path.write_bytes(b"not an npz file")
    with pytest.warns(UserWarning, match=path.name):
        again = cached_split(counting, 4, size=48, seed=0, split="test")
    assert counting.calls == 2
    assert_same_split(cached_split(counting, 4, size=48, seed=0, split="test"), again)
    assert counting.calls == 2  # the bad file was overwritten with a good one


def test_splits_above_the_size_limit_are_not_written(results, monkeypatch):
    monkeypatch.setattr(cache, "MAX_CACHED_BYTES", 1000)
    counting = Counting(make_cxr_phantom)
    cached_split(counting, 4, size=48, seed=0, split="test")
    cached_split(counting, 4, size=48, seed=0, split="test")
    assert counting.calls == 2 and not list(data_cache_dir().glob("*.npz"))
