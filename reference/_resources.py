"""Resource accounting for the local backend: who may run, with which GPUs.

`ResourcePool` hands out cores, GPU ids and memory to jobs in strict arrival
order: the job at the head of the queue runs as soon as its demand fits what
is free, and no later job overtakes it. That order is what makes RQ-5 hold
(a large request is never starved by a stream of small ones), at the price of
some idle capacity while the head waits. A demand larger than the whole
capacity never enters the queue (RQ-2): the caller fails it at once.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from spec import ResourceCapacity, ResourceDemand

__all__ = ["Grant", "ResourcePool", "capacity_from"]

_J = TypeVar("_J")


@dataclass(frozen=True)
class Grant:
    """What one running job holds until it finishes.

    Attributes:
        cores: Cores held.
        gpus: The GPU ids it holds, exclusively.
        memory: MB held (0 when memory is not accounted).
    """

    cores: int
    gpus: tuple[str, ...]
    memory: int


def capacity_from(
    cores: int | None, gpus: Sequence[str] | None, memory: int | None
) -> ResourceCapacity:
    """Build the capacity from constructor options, with their defaults.

    Args:
        cores: Total cores; ``None`` for ``os.cpu_count()``.
        gpus: GPU ids; ``None`` for those in ``CUDA_VISIBLE_DEVICES`` (none
            when it is unset or empty).
        memory: Total MB, or ``None`` to leave memory unaccounted.

    Raises:
        TypeError: An option has the wrong type.
        ValueError: An option is out of range, or a GPU id repeats.
    """
    if cores is None:
        cores = os.cpu_count() or 1
    if isinstance(cores, bool) or not isinstance(cores, int):
        raise TypeError(f"cores must be an int, got {type(cores).__name__}")
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    if gpus is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        gpus = [g.strip() for g in visible.split(",") if g.strip()]
    if isinstance(gpus, (str, bytes)) or not all(isinstance(g, str) for g in gpus):
        raise TypeError(f"gpus must be a list of device id strings, got {gpus!r}")
    ids = tuple(gpus)
    if len(set(ids)) != len(ids) or any(not g or "," in g for g in ids):
        raise ValueError(f"gpus must be distinct, non-empty ids without ',': {ids!r}")
    if memory is not None:
        if isinstance(memory, bool) or not isinstance(memory, int):
            raise TypeError(f"memory must be an int (MB), got {type(memory).__name__}")
        if memory < 0:
            raise ValueError(f"memory must be >= 0 MB, got {memory}")
    return ResourceCapacity(cores, ids, memory)


class ResourcePool(Generic[_J]):
    """Admits queued jobs, in arrival order, while their demands fit.

    Args:
        capacity: What there is to hand out.
    """

    __slots__ = ("_free_cores", "_free_gpus", "_free_memory", "_queue", "capacity")

    def __init__(self, capacity: ResourceCapacity) -> None:
        self.capacity = capacity
        self._free_cores = capacity.cores
        self._free_gpus: list[str] = list(capacity.gpus)
        self._free_memory = capacity.memory
        self._queue: deque[tuple[_J, ResourceDemand]] = deque()

    def __len__(self) -> int:
        """How many jobs wait for resources."""
        return len(self._queue)

    def enqueue(self, job: _J, demand: ResourceDemand) -> None:
        """Queue ``job``; it must fit the whole capacity (check `fits` first)."""
        self._queue.append((job, demand))

    def fits(self, demand: ResourceDemand) -> bool:
        """Whether ``demand`` could ever run here (fits the whole capacity)."""
        return demand.fits(self.capacity)

    def admit(self, skip: Callable[[_J], bool]) -> list[tuple[_J, Grant]]:
        """Take the jobs at the head of the queue whose demands fit now.

        Stops at the first that does not fit, so no job overtakes another.

        Args:
            skip: Jobs it is true for (canceled ones) leave the queue
                without being given anything.
        """
        admitted: list[tuple[_J, Grant]] = []
        queue = self._queue
        while queue:
            job, demand = queue[0]
            if skip(job):
                queue.popleft()
                continue
            gpus = demand.whole_gpus
            memory = demand.memory if self._free_memory is not None else 0
            if (
                demand.cores > self._free_cores
                or gpus > len(self._free_gpus)
                or (self._free_memory is not None and memory > self._free_memory)
            ):
                break
            queue.popleft()
            self._free_cores -= demand.cores
            held = tuple(self._free_gpus[:gpus])
            del self._free_gpus[:gpus]
            if self._free_memory is not None:
                self._free_memory -= memory
            admitted.append((job, Grant(demand.cores, held, memory)))
        return admitted

    def release(self, grant: Grant) -> None:
        """Give back what a finished job held."""
        self._free_cores += grant.cores
        self._free_gpus.extend(grant.gpus)
        if self._free_memory is not None:
            self._free_memory += grant.memory

    def clear(self) -> None:
        """Forget every queued job (shutdown)."""
        self._queue.clear()
