"""Scoring a chapter's shards on a Dask cluster.

A shard is one method scored on one data set with one model kind (``medlit.benchmark.cached_score_method``). By
default a chapter scores its shards one after another in its own process. With a scheduler
(``medlit book --scheduler``, or ``$MEDLIT_SCHEDULER`` for a single chapter) the shards that are not on disk yet
run on Dask's distributed scheduler instead, one task each, while the chapter shows their progress; the chapter
then assembles its cube from the shards exactly as it would have in-process.

``local:N``
    a local cluster of N worker processes, one thread each (started by ``medlit book``, closed after it).
``tcp://host:port`` (or any address ``distributed.Client`` takes)
    a running cluster, for instance GPU nodes started under SLURM with dask-jobqueue (see the README).

Workers load the data and the models from the results folder (``$MEDLIT_RESULTS``; on a real cluster a shared
filesystem that every worker sees): the chapter prepares its models first, so a worker never trains one, and
writes each shard file there itself, so a shard that finished is kept when another fails. Real data sets named
with ``--data`` are registered on each worker with the chapter's folder and options.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

SCHEDULER_VARIABLE = "MEDLIT_SCHEDULER"
CONNECT_TIMEOUT = 30  # seconds to reach a scheduler before giving up
_LOCAL = re.compile(r"^local:(\d+)$")

_clients: dict[str, object] = {}
_prepared: dict[tuple, object] = {}  # on a worker: (profile, data set, model kind, device) -> Prepared


class SchedulerError(ValueError):
    """A scheduler setting that names no cluster medlit can use."""


def scheduler_setting(value: str | None = None) -> str:
    """The scheduler asked for: ``value``, else ``$MEDLIT_SCHEDULER``; "" means in-process. Checked."""
    value = (value if value is not None else os.environ.get(SCHEDULER_VARIABLE, "")).strip()
    if value in ("", "none", "in-process"):
        return ""
    match = _LOCAL.match(value)
    if value.startswith("local") and (match is None or int(match.group(1)) < 1):
        raise SchedulerError(f"scheduler {value!r}: a local cluster is 'local:N' with N >= 1 workers")
    if match is None and "://" not in value and not re.match(r"^[\w.-]+:\d+$", value):
        raise SchedulerError(f"scheduler {value!r}: expected 'local:N' or a scheduler address such as "
                             "tcp://10.0.0.5:8786")
    return value


@contextlib.contextmanager
def scheduler(value: str | None) -> Iterator[str]:
    """The address of the cluster ``value`` names (a ``local:N`` cluster is started here and closed on exit);
    "" for in-process. ``$MEDLIT_SCHEDULER`` holds the address meanwhile, so chapter kernels started inside the
    block (they inherit the environment) send their shards there."""
    value = scheduler_setting(value)
    if not value:
        yield ""
        return
    before = os.environ.get(SCHEDULER_VARIABLE)
    with contextlib.ExitStack() as stack:
        match = _LOCAL.match(value)
        if match:
            from distributed import LocalCluster

            # one thread per worker: the shards are many and independent, a worker's torch gets one core
            cluster = stack.enter_context(LocalCluster(n_workers=int(match.group(1)), threads_per_worker=1,
                                                       processes=True, dashboard_address=None,
                                                       silence_logs=logging.ERROR))
            address = cluster.scheduler_address
        else:
            address = value
        os.environ[SCHEDULER_VARIABLE] = address
        try:
            yield address
        finally:
            if address in _clients:  # a client of a cluster that is going away would try to reconnect
                _clients.pop(address).close()
            if before is None:
                os.environ.pop(SCHEDULER_VARIABLE, None)
            else:
                os.environ[SCHEDULER_VARIABLE] = before


def client(address: str):
    """A ``distributed.Client`` connected to ``address`` (one per address and process)."""
    if address not in _clients or _clients[address].status not in ("running", "connecting"):
        from distributed import Client

        try:
            # not the process's default dask scheduler: xarray would then take distributed locks to write cubes
            _clients[address] = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except OSError as error:
            raise SchedulerError(f"cannot reach the Dask scheduler at {address} (${SCHEDULER_VARIABLE}): "
                                 f"{error}") from None
    return _clients[address]


@dataclass(frozen=True)
class ShardTask:
    """What a worker needs to score one shard: the profile, data set, model kind and device of the chapter's
    ``Prepared``, the method and metrics, and how to register the data set when it is a real one."""

    profile: object  # medlit.profiles.Profile
    dataset: str
    model: str
    device: str
    method: str
    metrics: tuple[str, ...]
    force: bool = False
    registration: tuple | None = None


def _worker_prepared(task: ShardTask):
    from medlit.benchmark import prepare
    from medlit.data.registry import DATASETS

    if task.registration is not None and task.dataset not in DATASETS:
        from medlit.data.adapters import register_real_dataset

        root, options = task.registration
        register_real_dataset(task.dataset, root, **options)
    key = (task.profile, task.dataset, task.model, task.device)
    if key not in _prepared:
        _prepared.clear()  # one data set and model at a time: a worker's memory stays that of one chapter
        _prepared[key] = prepare(task.profile, task.dataset, model=task.model, device=task.device, progress=False)
    return _prepared[key]


def score_shard(task: ShardTask):
    """Score one shard on a worker (or anywhere): ``cached_score_method``'s (scores, seconds per image, reason,
    pointing curve), its shard file written beside the others."""
    from medlit.benchmark import cached_score_method, metric_params
    from medlit.explain.data_inputs import data_inputs_for

    prepared = _worker_prepared(task)
    data = prepared.explained
    params = metric_params(prepared.profile, data)
    inputs = data_inputs_for(prepared.splits["train"], data)
    return cached_score_method(prepared, data, task.method, list(task.metrics), params, inputs, force=task.force)


def score_on_cluster(address: str, tasks: list[ShardTask], *, progress: bool = True, desc: str = "shards") -> list:
    """Run ``tasks`` on the cluster at ``address``; their results in task order.

    Every task runs to its end even when another fails (its shard is kept on disk); then the first failure is
    raised, naming its shard."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    connection = client(address)
    futures = [connection.submit(score_shard, task, pure=False,
                                 key=f"medlit-{task.dataset}-{task.model}-{task.method}-{os.urandom(4).hex()}")
               for task in tasks]
    index = {future.key: i for i, future in enumerate(futures)}
    results: list = [None] * len(tasks)
    failures = []
    with connection.as_current(), tqdm(total=len(tasks), desc=f"{desc} on {address}", disable=not progress) as bar:
        for future in as_completed(futures):
            i = index[future.key]
            try:
                results[i] = future.result()
            except Exception as error:
                failures.append((tasks[i], error))
            bar.update()
    if failures:
        task, error = failures[0]
        raise RuntimeError(f"shard {task.dataset} / {task.model} / {task.method} failed on the cluster "
                           f"({type(error).__name__}: {error}); {len(tasks) - len(failures)} of {len(tasks)} "
                           "shards finished and are kept") from error
    return results
