"""Resource accounting: capacity, refusals, and who may run with which GPUs.

`ResourcePool` hands out cores, GPU ids and memory to jobs in strict arrival
order: the job at the head of the queue runs as soon as its demand fits what
is free, and no later job overtakes it. That order is what makes RQ-5 hold
(a large request is never starved by a stream of small ones), at the price of
some idle capacity while the head waits. A demand larger than the whole
capacity never enters the queue (RQ-2): the caller fails it at once.

The pool is shared by the event loop and the thread pool's pullers, which
admit jobs themselves (`reference._workers.JobQueue`); its ``lock`` makes
each step (take the head, give a grant back) one. A demand of cores alone
gets a shared `Grant`, so the default path (one core a task) builds none.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Generic, NamedTuple, TypeVar

from reference._placement import CoreSet, core_ids_from, usable_cores
from spec import (
    CapabilityNotSupportedError,
    ResourceCapacity,
    ResourceDemand,
    ResourceUnavailableError,
)

__all__ = [
    "Grant",
    "ResourcePool",
    "capacity_from",
    "function_refusal",
    "unavailable",
]

_J = TypeVar("_J")


@dataclass(frozen=True)
class Grant:
    """What one running job holds until it finishes.

    Attributes:
        cores: Cores held.
        gpus: The GPU ids it holds, exclusively.
        memory: MB held (0 when memory is not accounted).
        core_ids: The core ids it holds, exclusively, where the pool binds
            (its capacity names core ids); ``None`` where cores are counted.
        lane: For a grant of cores alone, the pool's shared grant of that
            many cores (`of_cores`; that grant's lane is itself): a job
            whose need names it may take this grant over (`passes_to`).
            ``None`` for a grant that holds GPUs or memory.
    """

    cores: int
    gpus: tuple[str, ...]
    memory: int
    core_ids: tuple[int, ...] | None = None
    lane: Grant | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of_cores(cls, cores: int) -> Grant:
        """The shared grant of ``cores`` alone, counted: its own lane."""
        grant = cls(cores, (), 0)
        object.__setattr__(grant, "lane", grant)  # frozen: set once, here
        return grant

    def passes_to(self, need: _Need) -> bool:
        """Whether a job with ``need`` can take this grant over as it is.

        True for a need of cores alone, the same number, when this grant
        holds nothing else: the thread pool's default path (one core each)
        then hands a finished job's cores to the next with no pool count
        changing and, binding, no thread rebound. `reference._workers`
        spells it out inline on that path.
        """
        plain = need.plain
        return plain is not None and plain is self.lane


class _Need(NamedTuple):
    """A queued demand as the pool compares it (one per demand object)."""

    cores: int
    gpus: int
    """Whole GPUs."""
    memory: int
    """MB; 0 when memory is not accounted."""
    plain: Grant | None
    """The shared grant of a demand of cores alone."""


def capacity_from(
    cores: int | Iterable[int] | None,
    gpus: Sequence[str] | None,
    memory: int | None,
    *,
    bind: bool = False,
) -> ResourceCapacity:
    """Build the capacity from constructor options, with their defaults.

    Args:
        cores: Total cores, or (binding) the core ids themselves; ``None``
            for the cores of this process's CPU affinity (its cpuset), or
            ``os.cpu_count()`` where the platform cannot tell.
        gpus: GPU ids; ``None`` for those in ``CUDA_VISIBLE_DEVICES`` (none
            when it is unset or empty).
        memory: Total MB, or ``None`` to leave memory unaccounted.
        bind: Name the core ids (`ResourceCapacity.core_ids`), so that the
            pool hands out ids and tasks are bound to them; they must be
            cores this process may use (`reference._placement.core_ids_from`).

    Raises:
        TypeError: An option has the wrong type.
        ValueError: An option is out of range, a GPU id repeats, or (binding)
            a core is not one this process may use.
    """
    usable = usable_cores()
    core_ids: tuple[int, ...] = ()
    if bind:
        core_ids = core_ids_from(cores, usable)
        cores = len(core_ids)
    elif cores is None:
        cores = len(usable) if usable else os.cpu_count() or 1
    if isinstance(cores, bool) or not isinstance(cores, int):
        raise TypeError(
            f"cores must be an int (core ids need binding on), got "
            f"{type(cores).__name__}"
        )
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
    return ResourceCapacity(cores, ids, memory, core_ids)


def function_refusal(
    uid: str, demand: ResourceDemand
) -> CapabilityNotSupportedError | None:
    """Why a function task cannot have ``demand``, if it cannot: ranks or GPUs.

    CUDA reads ``CUDA_VISIBLE_DEVICES`` once per process, and a pool's
    workers outlive their tasks, so a function cannot be given GPUs honestly;
    nor can a function run as several ranks.
    """
    if demand.ranks > 1 or demand.gpus > 0:
        return CapabilityNotSupportedError(
            "ranks and GPUs for function tasks",
            f"task {uid!r} asks for {demand.ranks} rank(s) and "
            f"{demand.gpus:g} GPU(s); run it as an executable",
        )
    return None


def unavailable(
    uid: str, demand: ResourceDemand, capacity: ResourceCapacity
) -> ResourceUnavailableError:
    """The error failing a demand larger than the whole capacity (RQ-2)."""
    memory = (
        "unaccounted memory" if capacity.memory is None else f"{capacity.memory} MB"
    )
    return ResourceUnavailableError(
        f"task {uid!r} asks for {demand.cores} core(s), {demand.whole_gpus} "
        f"GPU(s) and {demand.memory} MB; the backend has {capacity.cores} "
        f"core(s), {len(capacity.gpus)} GPU(s) and {memory} in all"
    )


class ResourcePool(Generic[_J]):
    """Admits queued jobs, in arrival order, while their demands fit.

    The methods do not lock: where several threads share a pool (the local
    backend's event loop and its pool threads), each call is made holding
    `lock`, and `JobQueue` does so. One lock for the free resources and the
    queue makes "the head fits, take it" one step, whichever thread asks.

    Args:
        capacity: What there is to hand out.

    Attributes:
        capacity: What there is to hand out.
        lock: Held for every call where threads share the pool.
        free_cores: Cores not held by any job.
        waiting: The queued jobs, oldest first, each as ``(job, need)``:
            cores, whole GPUs, MB (0 when memory is not accounted) and, for
            a demand of cores alone, the shared `Grant` it will get. Read it
            holding ``lock``; `enqueue` may add to it meanwhile.
    """

    __slots__ = (
        "_free_core_ids",
        "_free_gpus",
        "_free_memory",
        "_last_demand",
        "_last_need",
        "_plain",
        "capacity",
        "free_cores",
        "lock",
        "waiting",
    )

    def __init__(self, capacity: ResourceCapacity) -> None:
        self.capacity = capacity
        self.lock = threading.Lock()
        self.free_cores = capacity.cores
        self._free_gpus: list[str] = list(capacity.gpus)
        # Where the capacity names core ids, the free ones: each grant gets
        # its own and the job is bound to them.
        self._free_core_ids = CoreSet(capacity.core_ids) if capacity.core_ids else None
        # MB free; held at 0 when memory is not accounted (every demand then
        # counts 0 MB, so it is never compared).
        self._free_memory = capacity.memory or 0
        # Jobs waiting for resources, oldest first, each with its need.
        self.waiting: deque[tuple[_J, _Need]] = deque()
        # Grants of cores alone, shared: the default path builds none per task.
        self._plain: dict[int, Grant] = {}
        self._last_demand: ResourceDemand | None = None
        self._last_need = _Need(0, 0, 0, None)

    def __len__(self) -> int:
        """How many jobs wait for resources."""
        return len(self.waiting)

    def shared_grant(self, demand: ResourceDemand) -> Grant | None:
        """The shared grant of a demand of cores alone, or ``None``.

        The same object for every demand of as many cores (its own
        `Grant.lane`); ``None`` for a demand of GPUs or (accounted) memory.
        """
        return self._need(demand).plain

    def _need(self, demand: ResourceDemand) -> _Need:
        # What the pool compares and hands out for ``demand``; one per demand
        # object, so a batch sharing the default demand shares one.
        if demand is self._last_demand:
            return self._last_need
        gpus = math.ceil(demand.gpus) if demand.gpus else 0
        memory = demand.memory if self.capacity.memory is not None else 0
        plain = None
        if not gpus and not memory:
            plain = self._plain.get(demand.cores)
            if plain is None:
                plain = self._plain[demand.cores] = Grant.of_cores(demand.cores)
        need = _Need(demand.cores, gpus, memory, plain)
        self._last_demand, self._last_need = demand, need
        return need

    def enqueue(self, job: _J, demand: ResourceDemand) -> None:
        """Queue ``job``; it must fit the whole capacity (check `fits` first)."""
        self.waiting.append((job, self._need(demand)))

    def enqueue_all(self, pairs: Iterable[tuple[_J, ResourceDemand]]) -> None:
        """Queue each ``(job, demand)`` in order, as `enqueue` does."""
        append = self.waiting.append
        last: ResourceDemand | None = None
        need = self._last_need
        for job, demand in pairs:
            if demand is not last:  # a batch mostly shares one demand
                last, need = demand, self._need(demand)
            append((job, need))

    def enqueue_each(self, jobs: Iterable[_J], demand: ResourceDemand) -> None:
        """Queue ``jobs`` in order, each asking for ``demand``.

        The common batch (every task asking for the default) in one C loop,
        not a Python step per task as `enqueue_all` takes.
        """
        self.waiting.extend(zip(jobs, repeat(self._need(demand))))

    def fits(self, demand: ResourceDemand) -> bool:
        """Whether ``demand`` could ever run here (fits the whole capacity)."""
        return demand.fits(self.capacity)

    def take(self, skip: Callable[[_J], bool]) -> tuple[_J, Grant] | None:
        """Take the job at the head of the queue if its demand fits now.

        No other job is looked at: none overtakes the head (RQ-5).

        Args:
            skip: Jobs it is true for (canceled ones) leave the queue
                without being given anything.

        Returns:
            The job and what it now holds, or ``None`` (queue empty, or the
            head does not fit).
        """
        queue = self.waiting
        while queue:
            job, (cores, gpus, memory, plain) = queue[0]
            if skip(job):
                queue.popleft()
                continue
            if cores > self.free_cores or (
                plain is None
                and (gpus > len(self._free_gpus) or memory > self._free_memory)
            ):
                return None
            queue.popleft()
            if plain is not None:
                return job, self._cores_alone(cores, plain)
            self.free_cores -= cores
            ids = self._free_core_ids
            held = tuple(self._free_gpus[:gpus])
            del self._free_gpus[:gpus]
            self._free_memory -= memory
            return job, Grant(
                cores, held, memory, None if ids is None else ids.take(cores)
            )
        return None

    def take_cores(self, plain: Grant) -> Grant | None:
        """Take the cores of ``plain`` (a `shared_grant`) now, ahead of the queue.

        For a job that arrived before every queued one, so that it overtakes
        none (RQ-5): `reference._workers.JobQueue` runs its ready queue's
        default jobs on cores taken this way.

        Returns:
            What the job now holds, or ``None`` if fewer cores are free.
        """
        if plain.cores > self.free_cores:
            return None
        return self._cores_alone(plain.cores, plain)

    def _cores_alone(self, cores: int, plain: Grant) -> Grant:
        # Cores known to be free, for a demand of cores alone: the shared
        # grant where cores are counted, their ids where the pool binds.
        self.free_cores -= cores
        ids = self._free_core_ids
        if ids is None:
            return plain
        return Grant(cores, (), 0, ids.take(cores), plain)

    def head_fits(self) -> bool:
        """Whether the job at the head of the queue would fit now."""
        if not self.waiting:
            return False
        cores, gpus, memory, plain = self.waiting[0][1]
        return cores <= self.free_cores and (
            plain is not None
            or (gpus <= len(self._free_gpus) and memory <= self._free_memory)
        )

    def admit(self, skip: Callable[[_J], bool]) -> list[tuple[_J, Grant]]:
        """Take the jobs at the head of the queue whose demands fit now.

        Stops at the first that does not fit, so no job overtakes another.

        Args:
            skip: As for `take`.
        """
        admitted: list[tuple[_J, Grant]] = []
        while (taken := self.take(skip)) is not None:
            admitted.append(taken)
        return admitted

    def release(self, grant: Grant) -> None:
        """Give back what a finished job held."""
        self.free_cores += grant.cores
        if grant.core_ids is not None and self._free_core_ids is not None:
            self._free_core_ids.give(grant.core_ids)
        if grant.gpus:
            self._free_gpus.extend(grant.gpus)
        if grant.memory:
            self._free_memory += grant.memory

    def clear(self) -> None:
        """Forget every queued job (shutdown)."""
        self.waiting.clear()
