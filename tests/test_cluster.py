"""Shards on a Dask cluster: a two-worker local cluster gives the cube the chapter computes in-process; a shard
that fails is named and the others are kept; scheduler settings are checked."""

from __future__ import annotations

import numpy as np
import pytest
from distributed import default_client

from medlit import benchmark
from medlit.benchmark import prepare, run_methods, shard_path
from medlit.cluster import SchedulerError, scheduler, scheduler_setting
from medlit.explain import registry as explain_registry

METHODS = ["saliency", "occlusion", "random", "centre_prior"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDLIT_RESULTS", str(tmp_path_factory.mktemp("results")))
    mp.delenv("MEDLIT_SCHEDULER", raising=False)
    yield prepare("smoke", progress=False)
    mp.undo()


@pytest.fixture(scope="module")
def two_workers(prepared):
    """One local cluster of two worker processes for the tests of this module (started after the results folder
    is set, so the workers inherit it)."""
    with scheduler("local:2") as address:
        yield address


def test_two_workers_give_the_cube_computed_in_process(prepared, two_workers, monkeypatch):
    assert two_workers.startswith("tcp://")
    monkeypatch.delenv("MEDLIT_SCHEDULER")
    here = run_methods(prepared, METHODS, chapter="in-process", force=True, progress=False)
    calls = []
    monkeypatch.setattr(benchmark, "cached_score_method", lambda *a, **k: calls.append(a) or pytest.fail())
    monkeypatch.setenv("MEDLIT_SCHEDULER", two_workers)
    there = run_methods(prepared, METHODS, chapter="on-cluster", force=True, progress=False)
    assert calls == []  # every shard ran on a worker
    with pytest.raises(ValueError, match="No clients found"):
        default_client()  # not the process's dask scheduler: xarray would write cubes under distributed locks
    np.testing.assert_allclose(there.score.values, here.score.values, rtol=0, atol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(there.pointing_curve.values, here.pointing_curve.values)
    np.testing.assert_array_equal(there.not_applicable.values, here.not_applicable.values)
    assert there.sizes == here.sizes and (there.seconds_per_image.values > 0).all()


def test_a_shard_that_fails_on_a_worker_is_named_and_the_others_are_kept(prepared, two_workers, monkeypatch):
    # registered here only: the workers do not know it, so its shard fails there
    monkeypatch.setattr(explain_registry.EXPLAINERS, "_entries", dict(explain_registry.EXPLAINERS._entries))
    explain_registry.register_explainer("known_here_only", family="control", citation="", long_name="Here only")(
        lambda model, x, target: x[:, 0])
    monkeypatch.setenv("MEDLIT_SCHEDULER", two_workers)
    with pytest.raises(RuntimeError, match="known_here_only failed on the cluster.*1 of 2 shards finished and "
                                           "are kept"):
        run_methods(prepared, ["known_here_only", "edge_map"], chapter="failing", force=True, progress=False)
    folder = shard_path(prepared, "edge_map", "x").parent
    assert list(folder.glob("*--edge_map--*.npz")) and not list(folder.glob("*--known_here_only--*"))


@pytest.mark.parametrize("value, expected", [("", ""), ("none", ""), ("local:3", "local:3"),
                                             ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
                                             ("gpu-node-1:8786", "gpu-node-1:8786")])
def test_scheduler_settings_are_read(value, expected):
    assert scheduler_setting(value) == expected


@pytest.mark.parametrize("value", ["local", "local:0", "local:two", "my cluster"])
def test_a_scheduler_setting_that_names_no_cluster_is_refused(value):
    with pytest.raises(SchedulerError, match="scheduler"):
        scheduler_setting(value)


def test_an_unreachable_scheduler_is_a_clear_error(prepared, monkeypatch):
    monkeypatch.setenv("MEDLIT_SCHEDULER", "tcp://127.0.0.1:9")
    monkeypatch.setattr("medlit.cluster.CONNECT_TIMEOUT", 2)
    with pytest.raises(SchedulerError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run_methods(prepared, ["random"], chapter="unreachable", force=True, progress=False)
