"""A disk cache for generated data: each embedded split is generated once and read back by every later chapter.

Generating the quick profile's phantom and fundus splits takes about half a minute, and every chapter needs them; a
cached split reads back in about a second. A split is keyed by its generator, its arguments and the code of the
generator's module and everything it imports (:func:`medlit.paths.code_hash`), so a change of the generator
regenerates. Splits larger than :data:`MAX_CACHED_BYTES` (the ``full`` profile's) are generated every time rather than
filling the disk. A cache file that cannot be read is reported, regenerated and overwritten.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import warnings
from collections.abc import Callable

import numpy as np
import torch

from medlit.data.sample import SampleSet
from medlit.paths import atomic_write_bytes, code_hash, results_dir

# The largest split written to the cache (its tensors' bytes): the quick profile's fundus training split is ~0.6 GB.
MAX_CACHED_BYTES = 1 << 30
_TENSORS = ("images", "labels", "boxes", "finding_masks", "anatomy_masks")


def data_cache_dir():
    """``results/data``: generated splits, shared by all profiles (the key holds the sizes)."""
    return results_dir() / "data"


def split_nbytes(data: SampleSet) -> int:
    return sum(getattr(data, name).element_size() * getattr(data, name).nelement() for name in _TENSORS)


def _encode(data: SampleSet) -> bytes:
    arrays = {f"tensor.{name}": getattr(data, name).numpy() for name in _TENSORS}
    arrays.update({f"meta.{key}": np.asarray(values) for key, values in data.meta.items()})
    # repr/literal_eval keeps tuples, ints and floats exactly (JSON would turn tuples into lists)
    arrays["header"] = np.asarray(json.dumps({"name": data.name, "split": data.split, "attrs": repr(data.attrs)}))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _decode(path) -> SampleSet:
    with np.load(path, allow_pickle=False) as stored:
        header = json.loads(str(stored["header"]))
        tensors = {name: torch.from_numpy(stored[f"tensor.{name}"]) for name in _TENSORS}
        meta = {key.removeprefix("meta."): stored[key] for key in stored.files if key.startswith("meta.")}
    return SampleSet(name=header["name"], split=header["split"], meta=meta,
                     attrs=ast.literal_eval(header["attrs"]), **tensors)


def _round_trips(attrs: dict) -> bool:
    """Whether the attributes come back equal from their repr (plain Python values; numpy scalars do not)."""
    try:
        return ast.literal_eval(repr(attrs)) == attrs
    except (ValueError, SyntaxError):
        return False


def cached_split(make: Callable[..., SampleSet], n: int, **kwargs) -> SampleSet:
    """``make(n, **kwargs)``, read from the cache when this generator, these arguments and this code made it before.

    ``make`` is a data generator such as :func:`medlit.data.phantom.make_cxr_phantom`; its arguments must have a
    stable ``repr`` (numbers, strings, booleans).
    """
    key = json.dumps({"generator": f"{make.__module__}.{make.__name__}", "n": n,
                      "arguments": {k: repr(v) for k, v in sorted(kwargs.items())},
                      "code": code_hash(make.__module__)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    split = kwargs.get("split", "data")
    path = data_cache_dir() / f"{make.__name__}-{split}-{n}-{digest}.npz"
    if path.is_file():
        try:
            return _decode(path)
        except Exception as error:  # a torn or foreign file: say so, regenerate, overwrite
            warnings.warn(f"generated-data cache {path} could not be read ({error}); generating the split again",
                          stacklevel=2)
    data = make(n, **kwargs)
    if split_nbytes(data) <= MAX_CACHED_BYTES and _round_trips(data.attrs):
        atomic_write_bytes(path, _encode(data))
    return data
