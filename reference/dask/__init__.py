"""`DaskExecutionBackend`: runs tasks on a ``dask.distributed`` cluster.

Needs the ``dask`` extra (from a clone: ``pip install -e ".[dask]"``);
importing this package without ``distributed`` raises an `ImportError` that
says so. ``reference`` itself never imports it.

How it works, in one paragraph: ``submit_tasks`` only validates and queues
(it never awaits, so no callback can run inside it). A dispatcher task on
the caller's event loop connects the asynchronous ``distributed.Client``
(starting a `LocalCluster` first when it owns one), pickles function tasks
into chunks and submits each chunk as one Dask task with ``client.map``;
executables go one per Dask task. A consumer task takes finished Dask
futures from ``distributed.as_completed`` in batches, gathers their results
in one round trip, reports every task on the loop thread and drops the
futures, so Dask releases them. Cancels are collected and sent to every
worker in one ``client.run`` call, which marks the tasks there so they never
start and kills the process groups of canceled executables; each worker
answers which tasks it had already started in a thread, which cannot be
stopped. CANCELED is reported after the answer, only for the others. When a
worker dies, the tasks it held run again, one by one, each in a child
process of a worker, so that the one that killed it fails alone.

The parts, one role each:

| module | role |
| --- | --- |
| `_options` | the constructor's arguments, checked (`DaskOptions`) |
| `_decisions` | pure decisions: outcomes to states, re-runs, cancel answers, chunks |
| `_link` | the client and an owned cluster (`ClusterLink`) |
| `_dispatch` | tasks to Dask, chunked (`Dispatcher`) |
| `_settle` | finished Dask tasks to states (`Settler`) |
| `_cancel` | cancels on the workers (`CancelProtocol`) |
| `_backend` | `DaskExecutionBackend`, the composition |
| `_worker`, `_registry`, `_outcomes` | the worker side |
| `_cluster` | shared test clusters (`shared_local_backend`, ...) |
"""

from __future__ import annotations

try:
    import cloudpickle  # noqa: F401
    import distributed  # noqa: F401
except ImportError as _missing:  # pragma: no cover - exercised with a fake import
    raise ImportError(
        "reference.dask needs dask.distributed, which is not installed; install "
        'the dask extra (from a clone of the project: pip install -e ".[dask]") '
        f"({_missing})"
    ) from _missing

from reference.dask._backend import DaskExecutionBackend
from reference.dask._cluster import shared_local_backend, shared_resources_backend

__all__ = ["DaskExecutionBackend", "shared_local_backend", "shared_resources_backend"]
