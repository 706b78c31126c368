"""Placement: where a task ran, reported in ``task["placement"]`` (contract 1.2).

A backend that declares the ``placement`` capability (with ``resources``)
binds each task to what it was granted and says so: an executable (and all
it starts) runs with its CPU affinity set to its cores and
``CUDA_VISIBLE_DEVICES`` set to its GPU ids, a function task's worker thread
or process is bound to its cores while the task runs, and every task that
started carries a `Placement` when its terminal state is delivered (clauses
PL-1 to PL-4). The capacity names the core ids it hands out
(`spec.ResourceCapacity.core_ids`), so a placement can be checked against it.
"""

from __future__ import annotations

from typing_extensions import NotRequired, TypedDict

__all__ = ["Placement"]


class Placement(TypedDict):
    """Where a task ran: ``task["placement"]``, written before its terminal state.

    A backend adds keys of its own freely; these four are fixed by the
    contract, and ``worker`` by backends that run tasks on named workers.
    """

    host: str
    """Host name of the machine the task ran on (``socket.gethostname()`` there)."""
    cores: list[int] | None
    """The core ids the task was bound to, sorted, one per core it asked for
    (``ranks * cores_per_rank``); ``None`` where the backend counts cores but
    does not bind them (PL-3 then checks only the GPUs)."""
    gpus: list[str]
    """The GPU ids the task was given, exclusively (``CUDA_VISIBLE_DEVICES`` of
    an executable); empty when it asked for none."""
    memory: int
    """The memory granted, in MB: what the task asked for (``ranks *
    mem_per_rank``) where the backend accounts memory, else 0."""
    worker: NotRequired[str]
    """The worker that ran the task, where the backend has named workers (a
    Dask worker's address)."""
