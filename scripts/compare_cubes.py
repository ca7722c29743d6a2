"""Compare the numbers of two results folders: does a refactor change any score?

    .venv/bin/python scripts/compare_cubes.py OLD_RESULTS NEW_RESULTS --profile smoke

Cubes are matched by (chapter, data set, model label) read from inside each file, so renamed files still pair
up; studies (``checks/``) by chapter, study and data set. Every variable and coordinate that both hold is compared
exactly (NaN equal to NaN) on the methods both hold, except timings and provenance attributes. Methods only one
side holds are listed. Exit status 1 when any number differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr

TIMINGS = {"seconds_per_image"}


def _load(path: Path) -> xr.Dataset:
    with xr.open_dataset(path) as ds:
        return ds.load()


def _cube_key(ds: xr.Dataset) -> tuple:
    return (ds.attrs.get("chapter"), str(ds.dataset.values[0]), str(ds.model.values[0]))


def _study_key(path: Path, ds: xr.Dataset) -> tuple:
    # old layout: <chapter>_<study>.nc on the phantom; new: <chapter>--<study>--<dataset>--<model>.nc
    if "--" in path.stem:
        chapter, study, dataset, _ = path.stem.split("--")
    else:
        chapter, study = path.stem.rsplit("_", 1)
        dataset = "cxr-phantom"
    return (chapter, study, dataset)


def _equal(a: xr.DataArray, b: xr.DataArray) -> bool:
    a, b = a.values, b.values
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool((a == b).all())


def compare(old: xr.Dataset, new: xr.Dataset, label: str) -> int:
    failures = 0
    if "explainer" in old.dims and "explainer" in new.dims:
        shared = [m for m in old.explainer.values if m in new.explainer.values]
        only_old = sorted(map(str, set(old.explainer.values) - set(shared)))
        only_new = sorted(map(str, set(new.explainer.values) - set(shared)))
        if only_old or only_new:
            print(f"  {label}: methods only in old {only_old}, only in new {only_new}")
        old, new = old.sel(explainer=shared), new.sel(explainer=shared)
    for name in sorted((set(old.variables) & set(new.variables)) - TIMINGS):
        if not _equal(old[name], new[name]):
            print(f"  {label}: {name} DIFFERS")
            failures += 1
    print(f"  {label}: {'identical' if not failures else f'{failures} differ'} "
          f"({len(set(old.variables) & set(new.variables)) - len(TIMINGS & set(old.variables))} variables compared)")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--profile", default="smoke")
    args = parser.parse_args()
    failures = 0
    for folder, keyfn in (("cubes", lambda p, ds: _cube_key(ds)), ("checks", _study_key)):
        old = {keyfn(p, ds): ds for p in sorted((args.old / args.profile / folder).glob("*.nc")) for ds in [_load(p)]}
        new = {keyfn(p, ds): ds for p in sorted((args.new / args.profile / folder).glob("*.nc")) for ds in [_load(p)]}
        for key in sorted(old.keys() | new.keys(), key=str):
            if key not in old or key not in new:
                print(f"  {folder} {key}: only in {'old' if key in old else 'new'}")
                continue
            failures += compare(old[key], new[key], f"{folder} {key}")
    print("no number changed" if not failures else f"{failures} variables changed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
